//! AMF3 codec (Adobe "AMF 3 Specification", January 2013).
//!
//! AMF3 reaches an RTMP server in two ways: inside AMF0 through the AVM+
//! switch marker 0x11 (AMF0 spec §3.1; `amf0.rs` calls [`Amf3Decoder`] with a
//! fresh context for each switch), and in AMF3 command/data messages whose
//! bodies are mostly AMF0 with such switches.
//!
//! Implemented (decode):
//! - undefined, null, false, true (§3.2-§3.5), integer as a sign-extended
//!   29-bit value (§3.6), double (§3.7), String with the string reference
//!   table (§3.8), XMLDocument and XML (§3.9, §3.13, both to `Value::Xml`),
//!   Date (§3.10), Array (§3.11), anonymous/typed Object with inline or
//!   referenced traits, sealed and dynamic members (§3.12; the class name is
//!   read and dropped), ByteArray (§3.14).
//! - Object references (§3.1 "object reference table") to Date, Array,
//!   Object, XML and ByteArray values that are complete. A reference to an
//!   object still being decoded (a cycle) is `BadReference`: `Value` is a tree.
//!
//! Deliberately not implemented:
//! - Externalizable traits (§3.12, e.g. `flex.messaging.io.ArrayCollection`):
//!   their body is class-specific, so they are rejected as
//!   `AmfError::UnknownMarker(0x0A)`.
//! - Vector types 0x0D-0x10 (§3.15) and Dictionary 0x11 (§3.16):
//!   `UnknownMarker`.
//! - The encoder writes everything inline (no reference compression).
//!
//! Bounds (none of them can be exceeded by any input):
//! - recursion: containers nest at most `MAX_DEPTH` deep, counting the depth
//!   a referenced value brings with it (`TooDeep`);
//! - allocation: every length or count is checked against the remaining input
//!   before anything is allocated (`Truncated`);
//! - reference tables grow by at most one entry per value decoded and never
//!   past [`MAX_TABLE_ENTRIES`]; later entries are simply not recorded, so a
//!   reference to them is `BadReference`;
//! - values: one decode call produces at most [`MAX_VALUES`] values, counting
//!   every node of the result including those a reference copies in
//!   (`TooManyValues`); the count is checked before each value is decoded,
//!   so a body of millions of one-byte nulls fails after `MAX_VALUES` of them;
//! - copies made by resolving references (strings, traits, objects) are
//!   charged to a budget proportional to the input length, so a few bytes of
//!   references cannot expand into gigabytes (`BadLength` when exhausted).
//!   Copies kept in the object table are charged to a second budget of the
//!   same size (and at most `MAX_VALUES` nodes); when that runs out the
//!   object is still returned but is not referenceable (a later reference to
//!   it is `BadLength`). An [`Amf3Decoder`] that keeps its context across
//!   calls keeps this second budget too (topped up by each call's input), so
//!   its tables cannot grow faster than its input;
//! - containers reserve at most `PREALLOC_MAX` elements up front.
//!
//! Together: decoding `n` input bytes allocates at most about
//! `MAX_VALUES` × 56 bytes for the value tree (twice that with the object
//! table) plus `1 + 2 * CLONE_BUDGET_PER_BYTE` times `n` for string bytes,
//! plus a constant — whatever the bytes are.

use super::amf::{AmfError, Value, MAX_DEPTH, MAX_VALUES};

// §3.1 type markers.
const UNDEFINED: u8 = 0x00;
const NULL: u8 = 0x01;
const FALSE: u8 = 0x02;
const TRUE: u8 = 0x03;
const INTEGER: u8 = 0x04;
const DOUBLE: u8 = 0x05;
const STRING: u8 = 0x06;
const XML_DOC: u8 = 0x07;
const DATE: u8 = 0x08;
const ARRAY: u8 = 0x09;
const OBJECT: u8 = 0x0A;
const XML: u8 = 0x0B;
const BYTE_ARRAY: u8 = 0x0C;

/// Largest value a U29 can carry (§1.3.1).
const U29_MAX: u32 = 0x1FFF_FFFF;
/// Largest length or count that fits in a U29 next to its 1-bit flag
/// (U29S-value, U29A-value, U29B-value, U29X-value).
const U28_MAX: usize = 0x0FFF_FFFF;
/// Largest sealed-member count that fits in U29O-traits (count << 4).
const SEALED_MAX: usize = 0x01FF_FFFF;
/// §3.6: integers are 29-bit two's complement.
const INT_MIN: f64 = -268_435_456.0;
const INT_MAX: f64 = 268_435_455.0;

/// Cap on each reference table (strings, traits, objects).
pub const MAX_TABLE_ENTRIES: usize = 65_536;
/// Reference-copy budget: this much plus `CLONE_BUDGET_PER_BYTE` per input
/// byte, in units of one per value node plus one per string/byte-array byte.
pub(crate) const CLONE_BUDGET_BASE: usize = 64 * 1024;
pub(crate) const CLONE_BUDGET_PER_BYTE: usize = 2;
/// Most elements reserved up front for a counted container. Counts are
/// already bounded by the remaining input, but 32 nested containers each
/// reserving a count's worth would still cost a kilobyte per input byte
/// before the decode fails; beyond this the vector grows as values arrive.
const PREALLOC_MAX: usize = 16;

/// Initial capacity for a container announcing `count` elements.
pub(crate) fn prealloc(count: usize) -> usize {
    count.min(PREALLOC_MAX)
}

// ---------------------------------------------------------------------------
// Shared decoding machinery (also used by amf0.rs).
// ---------------------------------------------------------------------------

/// A bounds-checked big-endian cursor. Every read either succeeds or returns
/// `Truncated`; nothing here can panic.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        let end = self.pos.checked_add(n).ok_or(AmfError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(AmfError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Result<(), AmfError> {
        self.take(n).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AmfError> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| AmfError::Truncated)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, AmfError> {
        let b = self.peek().ok_or(AmfError::Truncated)?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, AmfError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, AmfError> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, AmfError> {
        self.array().map(u32::from_be_bytes)
    }

    /// IEEE-754 double, network byte order (AMF0 §2.2 / AMF3 §3.7).
    pub(crate) fn f64(&mut self) -> Result<f64, AmfError> {
        self.array().map(f64::from_be_bytes)
    }

    /// `len` bytes that must be UTF-8.
    pub(crate) fn utf8(&mut self, len: usize) -> Result<String, AmfError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| AmfError::BadUtf8)
    }

    /// §1.3.1: 1-4 bytes; the first three carry 7 bits each with the high bit
    /// meaning "more follows", a fourth byte carries all 8 bits.
    pub(crate) fn u29(&mut self) -> Result<u32, AmfError> {
        let mut v: u32 = 0;
        for _ in 0..3 {
            let b = self.u8()?;
            v = (v << 7) | u32::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        let b = self.u8()?;
        Ok((v << 8) | u32::from(b))
    }
}

/// Size and nesting of a decoded value, carried alongside it so reference
/// resolution can be bounded without walking the value again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// One per node plus one per string / byte-array / key byte.
    pub(crate) weight: usize,
    /// Container nesting: 0 for scalars, 1 + the deepest child otherwise.
    pub(crate) height: usize,
    /// Nodes (values) in the tree, this one included.
    pub(crate) nodes: usize,
}

impl Meta {
    pub(crate) fn leaf(bytes: usize) -> Self {
        Meta {
            weight: bytes.saturating_add(1),
            height: 0,
            nodes: 1,
        }
    }

    pub(crate) fn container() -> Self {
        Meta {
            weight: 1,
            height: 1,
            nodes: 1,
        }
    }

    pub(crate) fn add(&mut self, key_len: usize, child: Meta) {
        self.weight = self
            .weight
            .saturating_add(key_len)
            .saturating_add(child.weight);
        self.height = self.height.max(child.height.saturating_add(1));
        self.nodes = self.nodes.saturating_add(child.nodes);
    }
}

/// How many values one decode may still produce and how much copying
/// reference resolution may still do (see module docs).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Budget {
    /// Weight reference copies may still add to the result.
    refs: usize,
    /// Weight the object table may still keep.
    table: usize,
    /// Values the result may still have (`MAX_VALUES` per decode).
    values: usize,
    /// Values the object table may still keep.
    table_values: usize,
}

impl Budget {
    pub(crate) fn for_input(len: usize) -> Self {
        let b = clone_allowance(len);
        Budget {
            refs: b,
            table: b,
            values: MAX_VALUES,
            table_values: MAX_VALUES,
        }
    }

    /// The next call of a decoder that keeps its tables: fresh allowances for
    /// the result, while the table's allowance carries on, topped up in
    /// proportion to the new input only.
    fn next_call(self, len: usize) -> Self {
        Budget {
            table: self
                .table
                .saturating_add(len.saturating_mul(CLONE_BUDGET_PER_BYTE)),
            table_values: self.table_values,
            ..Budget::for_input(len)
        }
    }

    /// Count one value about to be decoded.
    pub(crate) fn value(&mut self) -> Result<(), AmfError> {
        self.values = self
            .values
            .checked_sub(1)
            .ok_or(AmfError::TooManyValues)?;
        Ok(())
    }

    /// A container announcing `count` elements must be able to hold them:
    /// checked before anything per element is read or reserved.
    pub(crate) fn expect_values(&self, count: usize) -> Result<(), AmfError> {
        if count > self.values {
            return Err(AmfError::TooManyValues);
        }
        Ok(())
    }

    /// Pay for bytes copied to resolve a reference; fails when exhausted.
    pub(crate) fn charge(&mut self, weight: usize) -> Result<(), AmfError> {
        self.refs = self.refs.checked_sub(weight).ok_or(AmfError::BadLength)?;
        Ok(())
    }

    /// Pay for a value tree copied in by a reference: its weight, and its
    /// nodes beyond the one `value()` already counted for the reference.
    fn charge_copy(&mut self, meta: Meta) -> Result<(), AmfError> {
        self.values = self
            .values
            .checked_sub(meta.nodes.saturating_sub(1))
            .ok_or(AmfError::TooManyValues)?;
        self.charge(meta.weight)
    }

    /// Pay for a copy kept in a reference table; `false` means "don't keep".
    fn try_table(&mut self, meta: Meta) -> bool {
        match (
            self.table.checked_sub(meta.weight),
            self.table_values.checked_sub(meta.nodes),
        ) {
            (Some(table), Some(table_values)) => {
                self.table = table;
                self.table_values = table_values;
                true
            }
            _ => false,
        }
    }
}

/// Weight reference copies may add for `len` input bytes.
fn clone_allowance(len: usize) -> usize {
    len.saturating_mul(CLONE_BUDGET_PER_BYTE)
        .saturating_add(CLONE_BUDGET_BASE)
}

#[derive(Debug)]
enum Slot {
    /// Reserved when the value started; a reference to it is a cycle.
    Pending,
    Ready(Value, Meta),
    /// Not kept because the table budget ran out.
    Dropped,
}

/// Object reference table (AMF3 §3.1; AMF0 §2.9 uses the same shape).
/// Indices are assigned when a value *starts* (pre-order), as encoders do.
#[derive(Debug, Default)]
pub(crate) struct RefTable {
    slots: Vec<Slot>,
}

impl RefTable {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.slots.truncate(len);
    }

    /// Claim the next index; `None` once the table is full.
    pub(crate) fn reserve(&mut self) -> Option<usize> {
        if self.slots.len() >= MAX_TABLE_ENTRIES {
            return None;
        }
        self.slots.push(Slot::Pending);
        Some(self.slots.len() - 1)
    }

    /// Record the finished value for a reserved index.
    pub(crate) fn fill(&mut self, slot: Option<usize>, v: &Value, meta: Meta, budget: &mut Budget) {
        let Some(entry) = slot.and_then(|i| self.slots.get_mut(i)) else {
            return;
        };
        *entry = if budget.try_table(meta) {
            Slot::Ready(v.clone(), meta)
        } else {
            Slot::Dropped
        };
    }

    /// Copy out entry `idx` for use at nesting `depth`.
    pub(crate) fn resolve(
        &self,
        idx: usize,
        depth: usize,
        budget: &mut Budget,
    ) -> Result<(Value, Meta), AmfError> {
        match self.slots.get(idx) {
            None | Some(Slot::Pending) => Err(AmfError::BadReference),
            Some(Slot::Dropped) => Err(AmfError::BadLength),
            Some(Slot::Ready(v, meta)) => {
                if depth.saturating_add(meta.height) > MAX_DEPTH {
                    return Err(AmfError::TooDeep);
                }
                budget.charge_copy(*meta)?;
                Ok((v.clone(), *meta))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Decoder.
// ---------------------------------------------------------------------------

/// Traits (§3.12): the sealed member names and whether dynamic members follow.
#[derive(Debug, Clone)]
struct Traits {
    sealed: Vec<String>,
    dynamic: bool,
    /// Copy cost of `sealed`, charged on every trait reference.
    weight: usize,
}

/// After the U29 that starts a Date/Array/Object/XML/ByteArray: either a
/// resolved object reference or the remaining 28 bits of an inline value.
enum Header {
    Ref(Value, Meta),
    Inline(u32),
}

/// AMF3 decoding context: the string, trait and object reference tables
/// (§3.1), which persist across calls to [`Amf3Decoder::decode`]. If a call
/// fails, entries it added are removed again, so the context stays usable.
#[derive(Debug)]
pub struct Amf3Decoder {
    strings: Vec<String>,
    traits: Vec<Traits>,
    objects: RefTable,
    budget: Budget,
}

impl Default for Amf3Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Amf3Decoder {
    pub fn new() -> Self {
        Self::with_budget(Budget::for_input(0))
    }

    /// Decode one value from the start of `input`; returns it and the number
    /// of bytes consumed. Each call may produce `MAX_VALUES` values.
    pub fn decode(&mut self, input: &[u8]) -> Result<(Value, usize), AmfError> {
        self.budget = self.budget.next_call(input.len());
        let (v, _, used) = self.decode_nested(input, 0)?;
        Ok((v, used))
    }

    /// A fresh context that spends an existing budget (AMF0's 0x11 switch).
    pub(crate) fn with_budget(budget: Budget) -> Self {
        Amf3Decoder {
            strings: Vec::new(),
            traits: Vec::new(),
            objects: RefTable::default(),
            budget,
        }
    }

    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    /// Decode one value whose containers sit at nesting `depth`.
    pub(crate) fn decode_nested(
        &mut self,
        input: &[u8],
        depth: usize,
    ) -> Result<(Value, Meta, usize), AmfError> {
        let marks = (self.strings.len(), self.traits.len(), self.objects.len());
        let mut r = Reader::new(input);
        match self.value(&mut r, depth) {
            Ok((v, meta)) => Ok((v, meta, r.pos())),
            Err(e) => {
                self.strings.truncate(marks.0);
                self.traits.truncate(marks.1);
                self.objects.truncate(marks.2);
                Err(e)
            }
        }
    }

    fn value(&mut self, r: &mut Reader<'_>, depth: usize) -> Result<(Value, Meta), AmfError> {
        self.budget.value()?;
        let marker = r.u8()?;
        match marker {
            // §3.2-§3.5
            UNDEFINED => Ok((Value::Undefined, Meta::leaf(0))),
            NULL => Ok((Value::Null, Meta::leaf(0))),
            FALSE => Ok((Value::Boolean(false), Meta::leaf(0))),
            TRUE => Ok((Value::Boolean(true), Meta::leaf(0))),
            // §3.6
            INTEGER => {
                let n = sign_extend_29(r.u29()?);
                Ok((Value::Number(f64::from(n)), Meta::leaf(0)))
            }
            // §3.7
            DOUBLE => Ok((Value::Number(r.f64()?), Meta::leaf(0))),
            // §3.8
            STRING => {
                let s = self.string_vr(r)?;
                let meta = Meta::leaf(s.len());
                Ok((Value::String(s), meta))
            }
            // §3.9, §3.13
            XML_DOC | XML => {
                let len = match self.header(r, depth)? {
                    Header::Ref(v, meta) => return Ok((v, meta)),
                    Header::Inline(len) => len as usize,
                };
                let slot = self.objects.reserve();
                let v = Value::Xml(r.utf8(len)?);
                Ok(self.finish(slot, v, Meta::leaf(len)))
            }
            // §3.10: the 28 bits after the inline flag are unused.
            DATE => {
                if let Header::Ref(v, meta) = self.header(r, depth)? {
                    return Ok((v, meta));
                }
                let slot = self.objects.reserve();
                let v = Value::Date(r.f64()?);
                Ok(self.finish(slot, v, Meta::leaf(0)))
            }
            // §3.11
            ARRAY => self.array(r, depth),
            // §3.12
            OBJECT => self.object(r, depth),
            // §3.14
            BYTE_ARRAY => {
                let len = match self.header(r, depth)? {
                    Header::Ref(v, meta) => return Ok((v, meta)),
                    Header::Inline(len) => len as usize,
                };
                let slot = self.objects.reserve();
                let v = Value::ByteArray(r.take(len)?.to_vec());
                Ok(self.finish(slot, v, Meta::leaf(len)))
            }
            // §3.15 vectors, §3.16 dictionary and anything unknown.
            other => Err(AmfError::UnknownMarker(other)),
        }
    }

    fn finish(&mut self, slot: Option<usize>, v: Value, meta: Meta) -> (Value, Meta) {
        self.objects.fill(slot, &v, meta, &mut self.budget);
        (v, meta)
    }

    /// U29O-ref (low bit 0: index into the object table) or an inline value.
    fn header(&mut self, r: &mut Reader<'_>, depth: usize) -> Result<Header, AmfError> {
        let u = r.u29()?;
        if u & 1 == 0 {
            let (v, meta) = self
                .objects
                .resolve((u >> 1) as usize, depth, &mut self.budget)?;
            Ok(Header::Ref(v, meta))
        } else {
            Ok(Header::Inline(u >> 1))
        }
    }

    /// UTF-8-vr (§1.3.2, §3.8): U29S-ref or U29S-value + bytes. The empty
    /// string is never sent by reference nor added to the table.
    fn string_vr(&mut self, r: &mut Reader<'_>) -> Result<String, AmfError> {
        let u = r.u29()?;
        if u & 1 == 0 {
            let s = self
                .strings
                .get((u >> 1) as usize)
                .ok_or(AmfError::BadReference)?;
            self.budget.charge(s.len().saturating_add(1))?;
            return Ok(s.clone());
        }
        let s = r.utf8((u >> 1) as usize)?;
        if !s.is_empty() && self.strings.len() < MAX_TABLE_ENTRIES {
            self.strings.push(s.clone());
        }
        Ok(s)
    }

    /// §3.11: U29A-value = dense count << 1 | 1, then the associative part
    /// (UTF-8-vr key, value)* ended by the empty string, then the dense part.
    fn array(&mut self, r: &mut Reader<'_>, depth: usize) -> Result<(Value, Meta), AmfError> {
        let dense = match self.header(r, depth)? {
            Header::Ref(v, meta) => return Ok((v, meta)),
            Header::Inline(n) => n as usize,
        };
        if depth >= MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        let slot = self.objects.reserve();
        let mut meta = Meta::container();
        let mut assoc = Vec::new();
        loop {
            let key = self.string_vr(r)?;
            if key.is_empty() {
                break;
            }
            let (v, m) = self.value(r, depth + 1)?;
            meta.add(key.len(), m);
            assoc.push((key, v));
        }
        // Every dense value takes at least one byte.
        if dense > r.remaining() {
            return Err(AmfError::Truncated);
        }
        let v = if assoc.is_empty() {
            let mut items = Vec::with_capacity(prealloc(dense));
            for _ in 0..dense {
                let (v, m) = self.value(r, depth + 1)?;
                meta.add(0, m);
                items.push(v);
            }
            Value::StrictArray(items)
        } else {
            assoc.reserve(prealloc(dense));
            for i in 0..dense {
                let key = i.to_string();
                let (v, m) = self.value(r, depth + 1)?;
                meta.add(key.len(), m);
                assoc.push((key, v));
            }
            Value::EcmaArray(assoc)
        };
        Ok(self.finish(slot, v, meta))
    }

    /// §3.12. After the object's U29 (low bit 1 = inline object) the next
    /// bits select: traits reference (x01), externalizable (111), or inline
    /// traits (011) with bit 3 = dynamic and the sealed count above bit 4.
    fn object(&mut self, r: &mut Reader<'_>, depth: usize) -> Result<(Value, Meta), AmfError> {
        let bits = match self.header(r, depth)? {
            Header::Ref(v, meta) => return Ok((v, meta)),
            Header::Inline(bits) => bits,
        };
        if depth >= MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        let traits = if bits & 1 == 0 {
            // U29O-traits-ref
            let t = self
                .traits
                .get((bits >> 1) as usize)
                .ok_or(AmfError::BadReference)?;
            // Every sealed value takes at least one byte.
            if t.sealed.len() > r.remaining() {
                return Err(AmfError::Truncated);
            }
            self.budget.charge(t.weight)?;
            t.clone()
        } else if bits & 2 != 0 {
            // U29O-traits-ext: the body is opaque, class-specific bytes.
            return Err(AmfError::UnknownMarker(OBJECT));
        } else {
            // U29O-traits
            let dynamic = bits & 4 != 0;
            let count = (bits >> 3) as usize;
            let _class_name = self.string_vr(r)?;
            // Every sealed name takes at least one byte.
            if count > r.remaining() {
                return Err(AmfError::Truncated);
            }
            // Each name is followed by a value later: refuse before keeping
            // a name per input byte.
            self.budget.expect_values(count)?;
            let mut sealed = Vec::with_capacity(prealloc(count));
            let mut weight = count;
            for _ in 0..count {
                let name = self.string_vr(r)?;
                weight = weight.saturating_add(name.len());
                sealed.push(name);
            }
            let t = Traits {
                sealed,
                dynamic,
                weight,
            };
            if self.traits.len() < MAX_TABLE_ENTRIES {
                self.traits.push(t.clone());
            }
            t
        };
        let slot = self.objects.reserve();
        let mut meta = Meta::container();
        let mut props = Vec::with_capacity(prealloc(traits.sealed.len()));
        for name in traits.sealed {
            let (v, m) = self.value(r, depth + 1)?;
            meta.add(name.len(), m);
            props.push((name, v));
        }
        if traits.dynamic {
            loop {
                let key = self.string_vr(r)?;
                if key.is_empty() {
                    break;
                }
                let (v, m) = self.value(r, depth + 1)?;
                meta.add(key.len(), m);
                props.push((key, v));
            }
        }
        Ok(self.finish(slot, Value::Object(props), meta))
    }
}

/// §3.6: the U29 holds a 29-bit two's-complement integer.
fn sign_extend_29(u: u32) -> i32 {
    ((u << 3) as i32) >> 3
}

/// Decode one AMF3 value from the start of `input` with a fresh context.
pub fn decode(input: &[u8]) -> Result<(Value, usize), AmfError> {
    Amf3Decoder::new().decode(input)
}

// ---------------------------------------------------------------------------
// Encoder.
// ---------------------------------------------------------------------------

/// Encode `v` as one AMF3 value, everything inline.
///
/// Mapping: Number → integer (0x04) when it is integral, not -0 and within
/// the 29-bit range, else double; Object → anonymous dynamic object, or, if
/// it has an empty key (which would end the dynamic members), an anonymous
/// sealed object; EcmaArray → Array with only an associative part (an empty
/// EcmaArray therefore decodes back as an empty StrictArray, and entries with
/// an empty key, which AMF3 cannot express, are left out); StrictArray →
/// Array with only a dense part; Xml → XMLDocument (0x07).
///
/// Beyond the format's limits (strings, byte arrays and arrays of 2^28 or
/// more bytes/items, keys of 2^28 or more bytes) the value is written as
/// `undefined` and the over-long key's member is left out.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Undefined => out.push(UNDEFINED),
        Value::Null => out.push(NULL),
        Value::Boolean(false) => out.push(FALSE),
        Value::Boolean(true) => out.push(TRUE),
        Value::Number(n) => encode_number(*n, out),
        Value::String(s) => {
            if s.len() > U28_MAX {
                out.push(UNDEFINED);
            } else {
                out.push(STRING);
                write_str_vr(s, out);
            }
        }
        Value::Xml(s) => write_inline_bytes(XML_DOC, s.as_bytes(), out),
        Value::ByteArray(b) => write_inline_bytes(BYTE_ARRAY, b, out),
        Value::Date(ms) => {
            out.push(DATE);
            write_u29(1, out);
            out.extend_from_slice(&ms.to_be_bytes());
        }
        Value::StrictArray(items) => {
            if items.len() > U28_MAX {
                out.push(UNDEFINED);
                return;
            }
            out.push(ARRAY);
            write_flagged_len(items.len(), out);
            out.push(0x01); // empty associative part
            for item in items {
                encode(item, out);
            }
        }
        Value::EcmaArray(props) => {
            out.push(ARRAY);
            write_u29(1, out); // no dense part
            for (k, v) in props {
                if k.is_empty() || k.len() > U28_MAX {
                    continue;
                }
                write_str_vr(k, out);
                encode(v, out);
            }
            out.push(0x01);
        }
        Value::Object(props) => encode_object(props, out),
    }
}

fn encode_number(n: f64, out: &mut Vec<u8>) {
    let integral = n.fract() == 0.0 && (INT_MIN..=INT_MAX).contains(&n);
    if integral && !(n == 0.0 && n.is_sign_negative()) {
        out.push(INTEGER);
        write_u29((n as i32 as u32) & U29_MAX, out);
    } else {
        out.push(DOUBLE);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_object(props: &[(String, Value)], out: &mut Vec<u8>) {
    if props.iter().any(|(k, _)| k.is_empty()) {
        // Sealed anonymous traits can carry any key, including "".
        let members: Vec<&(String, Value)> =
            props.iter().filter(|(k, _)| k.len() <= U28_MAX).collect();
        if members.len() > SEALED_MAX {
            out.push(UNDEFINED);
            return;
        }
        out.push(OBJECT);
        // U29O-traits: inline object, inline traits, not dynamic.
        write_u29(((members.len() as u32) << 4) | 0b0011, out);
        out.push(0x01); // class name ""
        for (k, _) in &members {
            write_str_vr(k, out);
        }
        for (_, v) in &members {
            encode(v, out);
        }
    } else {
        out.push(OBJECT);
        // U29O-traits: inline object, inline traits, dynamic, 0 sealed.
        write_u29(0b1011, out);
        out.push(0x01); // class name ""
        for (k, v) in props {
            if k.len() > U28_MAX {
                continue;
            }
            write_str_vr(k, out);
            encode(v, out);
        }
        out.push(0x01); // end of dynamic members
    }
}

/// Marker, U29 (len << 1 | 1), bytes; `undefined` if too long.
fn write_inline_bytes(marker: u8, bytes: &[u8], out: &mut Vec<u8>) {
    if bytes.len() > U28_MAX {
        out.push(UNDEFINED);
        return;
    }
    out.push(marker);
    write_flagged_len(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// Inline UTF-8-vr; callers ensure `s.len() <= U28_MAX`.
fn write_str_vr(s: &str, out: &mut Vec<u8>) {
    write_flagged_len(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

/// U29 of `len << 1 | 1`; callers ensure `len <= U28_MAX`.
fn write_flagged_len(len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len).unwrap_or(u32::MAX) & (U29_MAX >> 1);
    write_u29((len << 1) | 1, out);
}

/// §1.3.1, the inverse of `Reader::u29`; `v` is masked to 29 bits.
fn write_u29(v: u32, out: &mut Vec<u8>) {
    let v = v & U29_MAX;
    if v < 0x80 {
        out.push(v as u8);
    } else if v < 0x4000 {
        out.extend_from_slice(&[((v >> 7) as u8) | 0x80, (v & 0x7F) as u8]);
    } else if v < 0x20_0000 {
        out.extend_from_slice(&[
            ((v >> 14) as u8) | 0x80,
            (((v >> 7) & 0x7F) as u8) | 0x80,
            (v & 0x7F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            (((v >> 22) & 0x7F) as u8) | 0x80,
            (((v >> 15) & 0x7F) as u8) | 0x80,
            (((v >> 8) & 0x7F) as u8) | 0x80,
            (v & 0xFF) as u8,
        ]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    fn round_trip(v: &Value) -> Value {
        let bytes = enc(v);
        let (back, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len(), "{v:?}");
        back
    }

    fn obj(props: &[(&str, Value)]) -> Value {
        Value::Object(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn s(x: &str) -> Value {
        Value::String(x.to_string())
    }

    /// Decoding every strict prefix must fail cleanly, never panic.
    fn all_prefixes_fail(bytes: &[u8]) {
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n} of {bytes:02x?}");
        }
    }

    #[test]
    fn scalars_round_trip() {
        for v in [
            Value::Undefined,
            Value::Null,
            Value::Boolean(false),
            Value::Boolean(true),
            Value::Number(0.0),
            Value::Number(1.5),
            Value::Number(-7.0),
            Value::Number(f64::INFINITY),
            Value::Number(1e300),
            Value::Date(1_700_000_000_123.0),
            s(""),
            s("héllo"),
            Value::String("x".repeat(70_000)),
            Value::Xml("<a b=\"1\"/>".into()),
            Value::ByteArray(vec![0, 1, 2, 255]),
            Value::ByteArray(vec![]),
        ] {
            assert_eq!(round_trip(&v), v);
        }
        let nan = round_trip(&Value::Number(f64::NAN));
        assert!(matches!(nan, Value::Number(n) if n.is_nan()));
        let neg0 = round_trip(&Value::Number(-0.0));
        assert!(matches!(neg0, Value::Number(n) if n == 0.0 && n.is_sign_negative()));
    }

    #[test]
    fn containers_round_trip() {
        let inner = obj(&[("a", Value::Number(1.0)), ("b", s("x"))]);
        for v in [
            Value::StrictArray(vec![]),
            Value::StrictArray(vec![Value::Number(1.0), s("two"), Value::Null]),
            Value::EcmaArray(vec![
                ("k".into(), Value::Boolean(true)),
                ("0".into(), s("z")),
            ]),
            obj(&[]),
            inner.clone(),
            obj(&[
                ("nested", inner.clone()),
                ("list", Value::StrictArray(vec![inner.clone()])),
            ]),
            // Empty key: needs the sealed form.
            obj(&[("", Value::Number(3.0)), ("b", Value::Null)]),
            // Duplicate keys survive in order.
            obj(&[("a", Value::Number(1.0)), ("a", Value::Number(2.0))]),
        ] {
            assert_eq!(round_trip(&v), v);
        }
        // AMF3 has no separate ECMA array: an empty one comes back strict.
        assert_eq!(
            round_trip(&Value::EcmaArray(vec![])),
            Value::StrictArray(vec![])
        );
    }

    #[test]
    fn integers_and_u29() {
        let cases: &[(f64, &[u8])] = &[
            (0.0, &[0x04, 0x00]),
            (127.0, &[0x04, 0x7F]),
            (128.0, &[0x04, 0x81, 0x00]),
            (16383.0, &[0x04, 0xFF, 0x7F]),
            (16384.0, &[0x04, 0x81, 0x80, 0x00]),
            (2_097_151.0, &[0x04, 0xFF, 0xFF, 0x7F]),
            (2_097_152.0, &[0x04, 0x80, 0xC0, 0x80, 0x00]),
            // The 4th byte carries all 8 bits.
            (268_435_455.0, &[0x04, 0xBF, 0xFF, 0xFF, 0xFF]),
            (-1.0, &[0x04, 0xFF, 0xFF, 0xFF, 0xFF]),
            (-268_435_456.0, &[0x04, 0xC0, 0x80, 0x80, 0x00]),
        ];
        for (n, bytes) in cases {
            assert_eq!(enc(&Value::Number(*n)), *bytes, "{n}");
            assert_eq!(decode(bytes).unwrap(), (Value::Number(*n), bytes.len()));
        }
        // Just outside the 29-bit range: doubles.
        for n in [268_435_456.0, -268_435_457.0, 0.5] {
            let b = enc(&Value::Number(n));
            assert_eq!(b[0], DOUBLE);
            assert_eq!(decode(&b).unwrap().0, Value::Number(n));
        }
        // A U29 never takes more than 4 bytes, even if the 4th has its high bit.
        assert_eq!(decode(&[0x04, 0x80, 0x80, 0x80, 0x80]).unwrap().1, 5);
    }

    #[test]
    fn string_references() {
        // ["abc", "abc", "", "abc"]: "abc" once inline, then by reference 0.
        let bytes = [
            0x09, 0x09, 0x01, // array, dense 4, empty assoc
            0x06, 0x07, b'a', b'b', b'c', // inline "abc" -> string table #0
            0x06, 0x00, // ref #0
            0x06, 0x01, // "" (never in the table)
            0x06, 0x00,
        ];
        let (v, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            v,
            Value::StrictArray(vec![s("abc"), s("abc"), s(""), s("abc")])
        );
        // Member names share the table with values.
        let bytes = [
            0x0A, 0x0B, 0x01, // dynamic anonymous object
            0x07, b'k', b'e', b'y', 0x06, 0x00, // key "key" (#0) = ref #0
            0x01,
        ];
        assert_eq!(decode(&bytes).unwrap().0, obj(&[("key", s("key"))]));
        // Unknown string reference.
        assert_eq!(decode(&[0x06, 0x02]), Err(AmfError::BadReference));
        all_prefixes_fail(&bytes);
    }

    #[test]
    fn trait_and_object_references() {
        let bytes = [
            0x09, 0x07, 0x01, // array (object #0), dense 3
            // object #1, inline traits: 1 sealed, not dynamic: (1 << 4) | 0b0011
            0x0A, 0x13, 0x07, b'P', b'n', b't', // class "Pnt" (string #0)
            0x03, b'x', // sealed name "x" (string #1)
            0x04, 0x01, // x = 1
            // object #2 by traits reference #0: (0 << 2) | 0b01
            0x0A, 0x01, 0x04, 0x02, // x = 2
            0x0A, 0x02, // object reference #1
        ];
        let (v, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let p = |n: f64| obj(&[("x", Value::Number(n))]);
        assert_eq!(v, Value::StrictArray(vec![p(1.0), p(2.0), p(1.0)]));
        all_prefixes_fail(&bytes);

        // Sealed plus dynamic members: (1 << 4) | 0b1011.
        let bytes = [
            0x0A, 0x1B, 0x01, 0x03, b'a', 0x04, 0x05, // a = 5
            0x03, b'b', 0x02, 0x01, // b = false, end
        ];
        assert_eq!(
            decode(&bytes).unwrap().0,
            obj(&[("a", Value::Number(5.0)), ("b", Value::Boolean(false))])
        );
        // Unknown trait reference, unknown object reference.
        assert_eq!(decode(&[0x0A, 0x05]), Err(AmfError::BadReference));
        assert_eq!(decode(&[0x0A, 0x02]), Err(AmfError::BadReference));
        // A reference to the array that is still being decoded (a cycle).
        assert_eq!(
            decode(&[0x09, 0x03, 0x01, 0x09, 0x00]),
            Err(AmfError::BadReference)
        );
    }

    #[test]
    fn date_bytearray_xml_references() {
        let mut bytes = vec![0x09, 0x0D, 0x01]; // array #0, dense 6
        bytes.push(0x08);
        bytes.push(0x01);
        bytes.extend_from_slice(&1234.0f64.to_be_bytes()); // date #1
        bytes.extend_from_slice(&[0x0C, 0x05, 9, 8]); // bytearray #2
        bytes.extend_from_slice(&[0x0B, 0x07, b'<', b'a', b'>']); // xml #3
        bytes.extend_from_slice(&[0x08, 0x02, 0x0C, 0x04, 0x07, 0x06]); // refs 1, 2, 3
        let (v, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let (d, b, x) = (
            Value::Date(1234.0),
            Value::ByteArray(vec![9, 8]),
            Value::Xml("<a>".into()),
        );
        assert_eq!(
            v,
            Value::StrictArray(vec![d.clone(), b.clone(), x.clone(), d, b, x])
        );
        all_prefixes_fail(&bytes);
    }

    #[test]
    fn associative_array() {
        // dense 2, assoc {name: "n"}, dense ["a", "b"]
        let bytes = [
            0x09, 0x05, 0x09, b'n', b'a', b'm', b'e', 0x06, 0x03, b'n', 0x01, 0x06, 0x03, b'a',
            0x06, 0x03, b'b',
        ];
        let expected = Value::EcmaArray(vec![
            ("name".into(), s("n")),
            ("0".into(), s("a")),
            ("1".into(), s("b")),
        ]);
        assert_eq!(decode(&bytes).unwrap(), (expected.clone(), bytes.len()));
        assert_eq!(round_trip(&expected), expected);
        all_prefixes_fail(&bytes);
    }

    #[test]
    fn rejected_markers() {
        let mut ext = vec![0x0A, 0x07, 0x43];
        ext.extend_from_slice(b"flex.messaging.io.ArrayCollection");
        ext.extend_from_slice(&[0x09, 0x01, 0x01]);
        assert_eq!(decode(&ext), Err(AmfError::UnknownMarker(OBJECT)));
        for m in 0x0D..=0x12u8 {
            assert_eq!(decode(&[m, 0x01, 0x00]), Err(AmfError::UnknownMarker(m)));
        }
        assert_eq!(decode(&[0x06, 0x03, 0xFF]), Err(AmfError::BadUtf8));
        assert_eq!(decode(&[]), Err(AmfError::Truncated));
    }

    #[test]
    fn depth_limit() {
        let nested = |levels: usize| {
            let mut b = Vec::new();
            for _ in 0..levels {
                b.extend_from_slice(&[0x09, 0x03, 0x01]); // array of one
            }
            b.push(0x01);
            b
        };
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(decode(&nested(MAX_DEPTH + 1)), Err(AmfError::TooDeep));
        assert_eq!(decode(&nested(10_000)), Err(AmfError::TooDeep));
        let mut objs = Vec::new();
        for _ in 0..10_000 {
            objs.extend_from_slice(&[0x0A, 0x0B, 0x01, 0x03, b'a']);
        }
        assert_eq!(decode(&objs), Err(AmfError::TooDeep));
        // A reference cannot smuggle in extra depth: #1 has height 31; placing
        // it inside two more arrays would make 33 levels.
        let mut b = vec![0x09, 0x05, 0x01]; // #0: array of 2
        b.extend_from_slice(&nested(MAX_DEPTH - 1)[..3 * (MAX_DEPTH - 1)]);
        b.push(0x01);
        b.extend_from_slice(&[0x09, 0x03, 0x01, 0x09, 0x02]); // [ref #1]
        assert_eq!(decode(&b), Err(AmfError::TooDeep));
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        // Dense count 2^28 - 1 with one byte left.
        assert_eq!(
            decode(&[0x09, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x01]),
            Err(AmfError::Truncated)
        );
        // String / byte array / XML length 2^28 - 1.
        for m in [0x06, 0x0C, 0x0B] {
            assert_eq!(
                decode(&[m, 0xFF, 0xFF, 0xFF, 0xFF, 0x41]),
                Err(AmfError::Truncated)
            );
        }
        // Sealed count 2^25 - 1.
        assert_eq!(
            decode(&[0x0A, 0xFF, 0xFF, 0xFF, 0xF3, 0x01, 0x01]),
            Err(AmfError::Truncated)
        );
    }

    #[test]
    fn reference_bomb_is_bounded() {
        // One 1000-byte string, then 100k two-byte references to it.
        let n = 100_000usize;
        let mut b = vec![0x09];
        write_u29(((n as u32 + 1) << 1) | 1, &mut b);
        b.push(0x01);
        b.push(0x06);
        write_u29((1000 << 1) | 1, &mut b);
        b.extend(std::iter::repeat_n(b'a', 1000));
        for _ in 0..n {
            b.extend_from_slice(&[0x06, 0x00]);
        }
        assert_eq!(decode(&b), Err(AmfError::BadLength));
        // Doubling object references: #k+1 = [ref #k, ref #k].
        let mut b = vec![0x09, 0x3F, 0x01]; // #0: array of 31
        b.extend_from_slice(&[0x09, 0x03, 0x01, 0x06]); // #1: [long string]
        write_u29((1000 << 1) | 1, &mut b);
        b.extend(std::iter::repeat_n(b'a', 1000));
        for k in 1..31u8 {
            b.extend_from_slice(&[0x09, 0x05, 0x01, 0x09, k << 1, 0x09, k << 1]);
        }
        let err = decode(&b).unwrap_err();
        assert!(
            matches!(err, AmfError::BadLength | AmfError::TooDeep),
            "{err:?}"
        );
    }

    #[test]
    fn string_table_is_capped() {
        // 65_537 distinct strings, fed through one context in calls of fewer
        // than MAX_VALUES values each; the last one is not recorded.
        let n = MAX_TABLE_ENTRIES + 1;
        let mut d = Amf3Decoder::new();
        let mut i = 0;
        while i < n {
            let batch = (n - i).min(MAX_VALUES - 1);
            let mut b = vec![0x09];
            write_u29(((batch as u32) << 1) | 1, &mut b);
            b.push(0x01);
            for k in i..i + batch {
                b.push(0x06);
                write_str_vr(&k.to_string(), &mut b);
            }
            assert_eq!(d.decode(&b).unwrap().1, b.len());
            i += batch;
        }
        let mut b = vec![0x06];
        write_u29((MAX_TABLE_ENTRIES as u32) << 1, &mut b); // not recorded
        assert_eq!(d.decode(&b), Err(AmfError::BadReference));
        let mut ok = vec![0x06];
        write_u29((MAX_TABLE_ENTRIES as u32 - 1) << 1, &mut ok); // last recorded
        assert_eq!(d.decode(&ok).unwrap().0, s("65535"));
    }

    #[test]
    fn context_persists_and_rolls_back() {
        let mut d = Amf3Decoder::new();
        assert_eq!(
            d.decode(&[0x06, 0x07, b'a', b'b', b'c']).unwrap().0,
            s("abc")
        );
        // Fails after adding "xyz" as string #1: the addition is undone.
        assert!(d
            .decode(&[0x09, 0x03, 0x07, b'x', b'y', b'z', 0x06])
            .is_err());
        assert_eq!(d.decode(&[0x06, 0x02]), Err(AmfError::BadReference));
        assert_eq!(d.decode(&[0x06, 0x00]).unwrap(), (s("abc"), 2));
    }

    #[test]
    fn garbage_never_panics() {
        // Cheap deterministic fuzz: random bytes and mutations of valid input.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = enc(&obj(&[
            (
                "a",
                Value::StrictArray(vec![Value::Number(1.0), s("abc"), s("abc")]),
            ),
            ("b", Value::EcmaArray(vec![("k".into(), Value::Date(5.0))])),
            ("", Value::ByteArray(vec![1, 2])),
        ]));
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 64)).map(|_| (next() % 0x14) as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if b.is_empty() {
                    break;
                }
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            if let Ok((v, used)) = decode(&b) {
                assert!(used <= b.len());
                let again = enc(&v);
                let (v2, used2) = decode(&again).unwrap();
                assert_eq!(used2, again.len());
                assert_eq!(enc(&v2), again);
            }
        }
    }

    /// A dense array of `n` nulls.
    fn nulls(n: usize) -> Vec<u8> {
        let mut b = vec![0x09];
        write_u29(((n as u32) << 1) | 1, &mut b);
        b.push(0x01);
        b.extend(std::iter::repeat_n(0x01, n));
        b
    }

    #[test]
    fn values_per_decode_are_capped() {
        // The array counts as one value.
        assert!(decode(&nulls(MAX_VALUES - 1)).is_ok());
        assert_eq!(decode(&nulls(MAX_VALUES)), Err(AmfError::TooManyValues));
        // 8 MB of nulls: refused after MAX_VALUES of them, with the tree
        // costing a fraction of the input, not 32 bytes per byte.
        let big = nulls(8 << 20);
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode(&big));
        assert_eq!(r, Err(AmfError::TooManyValues));
        assert!(peak < MAX_VALUES * 64, "peak {peak} bytes");
        // A context that persists still gets MAX_VALUES per call.
        let mut d = Amf3Decoder::new();
        for _ in 0..3 {
            assert!(d.decode(&nulls(MAX_VALUES - 1)).is_ok());
        }
    }

    #[test]
    fn references_count_the_values_they_copy() {
        // #0 = array of 100 nulls (101 values), then references to it: each
        // copies 101 values, so 81 of them pass the cap and 82 do not.
        let refs = |k: usize| {
            let mut b = vec![0x09];
            write_u29((((k + 1) as u32) << 1) | 1, &mut b);
            b.push(0x01);
            b.extend(nulls(100));
            for _ in 0..k {
                b.extend_from_slice(&[0x09, 0x02]); // object reference #1
            }
            b
        };
        // 1 + 101 * (k + 1) values.
        let fits = (MAX_VALUES - 1) / 101 - 1;
        assert!(decode(&refs(fits)).is_ok());
        assert_eq!(decode(&refs(fits + 1)), Err(AmfError::TooManyValues));
    }

    #[test]
    fn sealed_names_are_refused_before_they_are_kept() {
        // Inline traits announcing 60_000 empty sealed names (one byte each,
        // 24 bytes each as Strings): refused before the names are read.
        let count = 60_000u32;
        let mut b = vec![0x0A];
        write_u29((count << 4) | 0b0011, &mut b);
        b.push(0x01); // class name ""
        b.extend(std::iter::repeat_n(0x01, 2 * count as usize));
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode(&b));
        assert_eq!(r, Err(AmfError::TooManyValues));
        assert!(peak < 4096, "peak {peak} bytes");
    }

    #[test]
    fn nested_copies_into_the_table_are_bounded() {
        // 31 arrays deep around 8000 nulls: the object table would keep a
        // copy of the inner tree per level (31 × 8000 values) without its
        // own allowance; with it, memory stays a small multiple of the tree.
        let mut b = Vec::new();
        for _ in 0..31 {
            b.extend_from_slice(&[0x09, 0x03, 0x01]);
        }
        b.extend(nulls(8000));
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode(&b).map(|(_, used)| used));
        assert_eq!(r, Ok(b.len()));
        assert!(peak < 8 * MAX_VALUES * 64, "peak {peak} bytes");
        // Bogus counts in nested containers reserve little before failing.
        let mut b = Vec::new();
        for _ in 0..32 {
            b.push(0x09);
            write_u29((60_000 << 1) | 1, &mut b);
            b.push(0x01);
        }
        b.extend(std::iter::repeat_n(0xFF, 60_000));
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode(&b));
        assert!(r.is_err());
        assert!(peak < 64 * 1024, "peak {peak} bytes");
    }
}
