//! AMF0 codec (Adobe "Action Message Format -- AMF 0", December 2007).
//!
//! RTMP command and data messages (connect, createStream, publish,
//! onMetaData, ...) are sequences of AMF0 values; [`decode_all`] reads such a
//! body, [`encode_all`] writes one.
//!
//! Implemented (decode):
//! - number §2.2, boolean §2.3, string §2.4, object §2.5, null §2.7,
//!   undefined §2.8, reference §2.9, ECMA array §2.10, strict array §2.12,
//!   date §2.13 (the time-zone field is read and ignored), long string §2.14,
//!   unsupported §2.15 (→ `Undefined`), XML document §2.17, typed object §2.18
//!   (the class name is dropped → `Value::Object`), and the AVM+ marker 0x11
//!   (§3.1): one AMF3 value decoded with a fresh AMF3 context.
//! - Object-like bodies (object, ECMA array, typed object) are read until the
//!   end sequence: an empty key followed by object-end 0x09 (§2.11). The ECMA
//!   array count is only a hint and is ignored, so onMetaData from ffmpeg and
//!   Flash (whose counts are not always right) decodes. An empty key followed
//!   by anything else is a property named "" (the grammar's `UTF-8` may be
//!   empty). A missing end sequence is `Truncated`.
//! - References (§2.9) resolve against the objects, typed objects, ECMA and
//!   strict arrays started earlier in the same [`decode`]/[`decode_all`]
//!   call. A reference to a value still being decoded (a cycle) is
//!   `BadReference`. Copies are bounded as described in `amf3.rs`.
//!
//! Deliberately not implemented: movieclip 0x04 and recordset 0x0E (reserved,
//! "not supported" in the spec) and a stray object-end 0x09 are
//! `UnknownMarker`. Decoding is strict about UTF-8 (`BadUtf8`).
//!
//! Limits: containers nest at most `MAX_DEPTH` deep (`TooDeep`), counts and
//! lengths are checked against the remaining input before allocating, and
//! one call produces at most `MAX_VALUES` values, references' copies
//! included (`TooManyValues`, checked before each value is decoded): the
//! cost of decoding is bounded as `amf3.rs` describes, whatever the input.

use super::amf::{AmfError, Value, MAX_DEPTH};
#[cfg(test)]
use super::amf::MAX_VALUES;
use super::amf3::{self, Amf3Decoder, Budget, Meta, Reader, RefTable};

// §2.1 type markers, plus §3.1 avmplus-object-marker.
const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const UNSUPPORTED: u8 = 0x0D;
const XML_DOCUMENT: u8 = 0x0F;
const TYPED_OBJECT: u8 = 0x10;
const AVMPLUS: u8 = 0x11;

/// Decode one AMF0 value from the start of `input`; returns it and the
/// number of bytes consumed.
pub fn decode(input: &[u8]) -> Result<(Value, usize), AmfError> {
    let mut d = Decoder::new(input);
    let (v, _) = d.value(0)?;
    Ok((v, d.r.pos()))
}

/// Decode a sequence of AMF0 values that fills all of `input` (a command
/// message body: name, transaction id, command object, arguments...).
/// References may point into earlier values of the same sequence.
pub fn decode_all(input: &[u8]) -> Result<Vec<Value>, AmfError> {
    let mut d = Decoder::new(input);
    let mut values = Vec::new();
    while d.r.remaining() > 0 {
        let (v, _) = d.value(0)?;
        values.push(v);
    }
    Ok(values)
}

struct Decoder<'a> {
    r: Reader<'a>,
    /// §2.9 reference table.
    refs: RefTable,
    budget: Budget,
}

impl<'a> Decoder<'a> {
    fn new(input: &'a [u8]) -> Self {
        Decoder {
            r: Reader::new(input),
            refs: RefTable::default(),
            budget: Budget::for_input(input.len()),
        }
    }

    fn value(&mut self, depth: usize) -> Result<(Value, Meta), AmfError> {
        let marker = self.r.u8()?;
        // The AMF3 value behind a switch counts itself.
        if marker != AVMPLUS {
            self.budget.value()?;
        }
        match marker {
            // §2.2
            NUMBER => Ok((Value::Number(self.r.f64()?), Meta::leaf(0))),
            // §2.3: zero is false, anything else true.
            BOOLEAN => Ok((Value::Boolean(self.r.u8()? != 0), Meta::leaf(0))),
            // §2.4
            STRING => {
                let len = usize::from(self.r.u16()?);
                let s = self.r.utf8(len)?;
                Ok((Value::String(s), Meta::leaf(len)))
            }
            // §2.5
            OBJECT => {
                enter(depth)?;
                let slot = self.refs.reserve();
                let (props, meta) = self.properties(depth)?;
                Ok(self.finish(slot, Value::Object(props), meta))
            }
            // §2.7, §2.8
            NULL => Ok((Value::Null, Meta::leaf(0))),
            UNDEFINED => Ok((Value::Undefined, Meta::leaf(0))),
            // §2.9: U16 index into the table of complex values.
            REFERENCE => {
                let idx = usize::from(self.r.u16()?);
                self.refs.resolve(idx, depth, &mut self.budget)
            }
            // §2.10: U32 associative-count (a hint), then object properties.
            ECMA_ARRAY => {
                enter(depth)?;
                let slot = self.refs.reserve();
                let _count_hint = self.r.u32()?;
                let (props, meta) = self.properties(depth)?;
                Ok(self.finish(slot, Value::EcmaArray(props), meta))
            }
            // §2.12: U32 array-count, then that many values.
            STRICT_ARRAY => {
                enter(depth)?;
                let slot = self.refs.reserve();
                let count = self.r.u32()? as usize;
                // Every value takes at least one byte: bound before allocating.
                if count > self.r.remaining() {
                    return Err(AmfError::Truncated);
                }
                let mut items = Vec::with_capacity(amf3::prealloc(count));
                let mut meta = Meta::container();
                for _ in 0..count {
                    let (v, m) = self.value(depth + 1)?;
                    meta.add(0, m);
                    items.push(v);
                }
                Ok(self.finish(slot, Value::StrictArray(items), meta))
            }
            // §2.13: DOUBLE milliseconds, S16 time-zone (reserved, ignored).
            DATE => {
                let ms = self.r.f64()?;
                let _tz = self.r.i16()?;
                Ok((Value::Date(ms), Meta::leaf(0)))
            }
            // §2.14
            LONG_STRING => {
                let len = self.r.u32()? as usize;
                let s = self.r.utf8(len)?;
                Ok((Value::String(s), Meta::leaf(len)))
            }
            // §2.15
            UNSUPPORTED => Ok((Value::Undefined, Meta::leaf(0))),
            // §2.17: UTF-8-long.
            XML_DOCUMENT => {
                let len = self.r.u32()? as usize;
                let s = self.r.utf8(len)?;
                Ok((Value::Xml(s), Meta::leaf(len)))
            }
            // §2.18: class-name, then object properties.
            TYPED_OBJECT => {
                enter(depth)?;
                let len = usize::from(self.r.u16()?);
                let _class_name = self.r.utf8(len)?;
                let slot = self.refs.reserve();
                let (props, meta) = self.properties(depth)?;
                Ok(self.finish(slot, Value::Object(props), meta))
            }
            // §3.1: the next value is AMF3, with its own (fresh) tables.
            AVMPLUS => {
                let mut amf3 = Amf3Decoder::with_budget(self.budget);
                let (v, meta, used) = amf3.decode_nested(self.r.rest(), depth)?;
                self.budget = amf3.budget();
                self.r.skip(used)?;
                Ok((v, meta))
            }
            // 0x04 movieclip, 0x09 object-end out of place, 0x0E recordset...
            other => Err(AmfError::UnknownMarker(other)),
        }
    }

    /// `*(object-property)` up to and including the end sequence
    /// `UTF-8-empty object-end-marker` (§2.5, §2.11).
    fn properties(&mut self, depth: usize) -> Result<(Vec<(String, Value)>, Meta), AmfError> {
        let mut props = Vec::new();
        let mut meta = Meta::container();
        loop {
            let len = usize::from(self.r.u16()?);
            let key = self.r.utf8(len)?;
            if key.is_empty() && self.r.peek() == Some(OBJECT_END) {
                self.r.skip(1)?;
                return Ok((props, meta));
            }
            let (v, m) = self.value(depth + 1)?;
            meta.add(key.len(), m);
            props.push((key, v));
        }
    }

    fn finish(&mut self, slot: Option<usize>, v: Value, meta: Meta) -> (Value, Meta) {
        self.refs.fill(slot, &v, meta, &mut self.budget);
        (v, meta)
    }
}

/// A container may start at `depth` only if it stays within `MAX_DEPTH`.
fn enter(depth: usize) -> Result<(), AmfError> {
    if depth >= MAX_DEPTH {
        Err(AmfError::TooDeep)
    } else {
        Ok(())
    }
}

/// Encode `v` as one AMF0 value.
///
/// String → string (§2.4), or long string (§2.14) above 65535 bytes;
/// Object → anonymous object; EcmaArray → ECMA array; Date → date with
/// time-zone 0; Xml → XML document. AMF0 cannot express a ByteArray, nor an
/// object/ECMA-array key longer than 65535 bytes: those values are written
/// as AMF3 behind the 0x11 switch (§3.1). Strings, XML and strict arrays of
/// 2^32 or more bytes/items are written as `undefined`.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => {
            out.push(BOOLEAN);
            out.push(u8::from(*b));
        }
        Value::String(s) => {
            if let Ok(len) = u16::try_from(s.len()) {
                out.push(STRING);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            } else {
                write_long(LONG_STRING, s, out);
            }
        }
        Value::Xml(s) => write_long(XML_DOCUMENT, s, out),
        Value::Object(props) => {
            if keys_fit(props) {
                out.push(OBJECT);
                write_properties(props, out);
            } else {
                write_avmplus(v, out);
            }
        }
        Value::EcmaArray(props) => {
            if keys_fit(props) {
                out.push(ECMA_ARRAY);
                let count = u32::try_from(props.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&count.to_be_bytes());
                write_properties(props, out);
            } else {
                write_avmplus(v, out);
            }
        }
        Value::StrictArray(items) => match u32::try_from(items.len()) {
            Ok(count) => {
                out.push(STRICT_ARRAY);
                out.extend_from_slice(&count.to_be_bytes());
                for item in items {
                    encode(item, out);
                }
            }
            Err(_) => out.push(UNDEFINED),
        },
        Value::Null => out.push(NULL),
        Value::Undefined => out.push(UNDEFINED),
        Value::Date(ms) => {
            out.push(DATE);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&0i16.to_be_bytes());
        }
        Value::ByteArray(_) => write_avmplus(v, out),
    }
}

/// Encode each value in turn (a command message body).
pub fn encode_all(values: &[Value], out: &mut Vec<u8>) {
    for v in values {
        encode(v, out);
    }
}

fn keys_fit(props: &[(String, Value)]) -> bool {
    props.iter().all(|(k, _)| k.len() <= usize::from(u16::MAX))
}

/// Properties then the end sequence; callers ensure every key fits a U16.
fn write_properties(props: &[(String, Value)], out: &mut Vec<u8>) {
    for (k, v) in props {
        let len = u16::try_from(k.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        encode(v, out);
    }
    out.extend_from_slice(&[0x00, 0x00, OBJECT_END]);
}

/// Marker, U32 length, UTF-8 bytes; `undefined` if too long.
fn write_long(marker: u8, s: &str, out: &mut Vec<u8>) {
    match u32::try_from(s.len()) {
        Ok(len) => {
            out.push(marker);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Err(_) => out.push(UNDEFINED),
    }
}

fn write_avmplus(v: &Value, out: &mut Vec<u8>) {
    out.push(AVMPLUS);
    amf3::encode(v, out);
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

    fn n(x: f64) -> Value {
        Value::Number(x)
    }

    /// Hand-built byte helpers (independent of the encoder).
    fn utf8(x: &str) -> Vec<u8> {
        let mut b = (x.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(x.as_bytes());
        b
    }
    fn str_val(x: &str) -> Vec<u8> {
        let mut b = vec![STRING];
        b.extend(utf8(x));
        b
    }
    fn num_val(x: f64) -> Vec<u8> {
        let mut b = vec![NUMBER];
        b.extend_from_slice(&x.to_be_bytes());
        b
    }

    /// Decoding every strict prefix of one value must fail cleanly.
    fn all_prefixes_fail(bytes: &[u8]) {
        for k in 0..bytes.len() {
            assert!(decode(&bytes[..k]).is_err(), "prefix {k} of {bytes:02x?}");
        }
    }

    #[test]
    fn every_type_round_trips() {
        let nested = obj(&[
            ("a", n(1.0)),
            ("b", Value::StrictArray(vec![s("x"), Value::Null])),
        ]);
        for v in [
            n(0.0),
            n(-1.25),
            n(f64::INFINITY),
            Value::Boolean(true),
            Value::Boolean(false),
            s(""),
            s("héllo"),
            Value::String("y".repeat(65_535)),
            Value::String("z".repeat(65_536)),
            Value::Null,
            Value::Undefined,
            Value::Date(1_700_000_000_000.0),
            Value::Xml("<x/>".into()),
            Value::ByteArray(vec![0, 1, 0xFF]),
            obj(&[]),
            nested.clone(),
            obj(&[("", n(1.0)), ("k", Value::Undefined)]),
            Value::EcmaArray(vec![]),
            Value::EcmaArray(vec![
                ("duration".into(), n(0.0)),
                ("inner".into(), nested.clone()),
            ]),
            Value::StrictArray(vec![]),
            Value::StrictArray(vec![nested.clone(), Value::ByteArray(vec![7])]),
        ] {
            assert_eq!(round_trip(&v), v);
        }
        assert_eq!(enc(&Value::String("z".repeat(65_536)))[0], LONG_STRING);
        assert_eq!(enc(&Value::ByteArray(vec![1]))[..2], [AVMPLUS, 0x0C]);
        // A key AMF0 cannot express goes through AMF3.
        let long_key = obj(&[(&"k".repeat(70_000), n(2.0))]);
        assert_eq!(enc(&long_key)[0], AVMPLUS);
        assert_eq!(round_trip(&long_key), long_key);
        let nan = round_trip(&n(f64::NAN));
        assert!(matches!(nan, Value::Number(x) if x.is_nan()));
    }

    #[test]
    fn ffmpeg_connect() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x02, 0x00, 0x07]);
        b.extend_from_slice(b"connect");
        b.extend_from_slice(&[0x00, 0x3F, 0xF0, 0, 0, 0, 0, 0, 0]); // 1.0
        b.push(0x03);
        b.extend_from_slice(&[0x00, 0x03]);
        b.extend_from_slice(b"app");
        b.extend_from_slice(&[0x02, 0x00, 0x04]);
        b.extend_from_slice(b"live");
        b.extend_from_slice(&[0x00, 0x04]);
        b.extend_from_slice(b"type");
        b.extend_from_slice(&[0x02, 0x00, 0x0A]);
        b.extend_from_slice(b"nonprivate");
        b.extend_from_slice(&[0x00, 0x08]);
        b.extend_from_slice(b"flashVer");
        b.extend_from_slice(&[0x02, 0x00, 0x1F]);
        b.extend_from_slice(b"FMLE/3.0 (compatible; FMSc/1.0)");
        b.extend_from_slice(&[0x00, 0x05]);
        b.extend_from_slice(b"tcUrl");
        b.extend_from_slice(&[0x02, 0x00, 0x1A]);
        b.extend_from_slice(b"rtmp://127.0.0.1:1935/live");
        b.extend_from_slice(&[0x00, 0x00, 0x09]);

        let values = decode_all(&b).unwrap();
        let cmd = obj(&[
            ("app", s("live")),
            ("type", s("nonprivate")),
            ("flashVer", s("FMLE/3.0 (compatible; FMSc/1.0)")),
            ("tcUrl", s("rtmp://127.0.0.1:1935/live")),
        ]);
        assert_eq!(values, vec![s("connect"), n(1.0), cmd.clone()]);
        assert_eq!(
            values[2].get("tcUrl").and_then(Value::as_str),
            Some("rtmp://127.0.0.1:1935/live")
        );
        // Our encoder produces exactly these bytes.
        let mut out = Vec::new();
        encode_all(&values, &mut out);
        assert_eq!(out, b);
        // Any strict prefix: never a panic; the object itself never decodes.
        for k in 0..b.len() {
            let _ = decode_all(&b[..k]);
        }
        all_prefixes_fail(&b[19..]);
    }

    #[test]
    fn flash_connect_with_extra_args() {
        let mut b = str_val("connect");
        b.extend(num_val(1.0));
        b.push(OBJECT);
        for (k, v) in [
            ("app", str_val("live")),
            ("flashVer", str_val("WIN 32,0,0,465")),
            ("swfUrl", str_val("http://example.com/p.swf")),
            ("tcUrl", str_val("rtmp://example.com/live")),
            ("fpad", vec![BOOLEAN, 0]),
            ("capabilities", num_val(239.0)),
            ("audioCodecs", num_val(3575.0)),
            ("videoCodecs", num_val(252.0)),
            ("videoFunction", num_val(1.0)),
            ("pageUrl", vec![UNDEFINED]),
            ("objectEncoding", num_val(0.0)),
        ] {
            b.extend(utf8(k));
            b.extend(v);
        }
        b.extend_from_slice(&[0, 0, OBJECT_END]);
        // Extra argument: {login, appKey}.
        b.push(OBJECT);
        b.extend(utf8("login"));
        b.extend(str_val("user"));
        b.extend(utf8("appKey"));
        b.extend(str_val("flashStreamingApp"));
        b.extend_from_slice(&[0, 0, OBJECT_END]);
        // And a trailing string argument.
        b.extend(str_val("extra"));

        let v = decode_all(&b).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v[0], s("connect"));
        assert_eq!(v[2].get("capabilities"), Some(&n(239.0)));
        assert_eq!(v[2].get("fpad"), Some(&Value::Boolean(false)));
        assert_eq!(v[2].get("pageUrl"), Some(&Value::Undefined));
        assert_eq!(
            v[3],
            obj(&[("login", s("user")), ("appKey", s("flashStreamingApp"))])
        );
        assert_eq!(v[4], s("extra"));
        let mut out = Vec::new();
        encode_all(&v, &mut out);
        assert_eq!(out, b);
        for k in 0..b.len() {
            let _ = decode_all(&b[..k]);
        }
    }

    #[test]
    fn on_metadata_ecma_array() {
        // ffmpeg-style @setDataFrame: the count is a hint (here wrong on purpose).
        let mut b = str_val("@setDataFrame");
        b.extend(str_val("onMetaData"));
        let array_at = b.len();
        b.extend_from_slice(&[ECMA_ARRAY, 0, 0, 0, 9]);
        b.extend(utf8("duration"));
        b.extend(num_val(0.0));
        b.extend(utf8("width"));
        b.extend(num_val(1280.0));
        b.extend(utf8("encoder"));
        b.extend(str_val("Lavf60.3.100"));
        b.extend_from_slice(&[0, 0, OBJECT_END]);
        let v = decode_all(&b).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2].get("width"), Some(&n(1280.0)));
        assert!(matches!(v[2], Value::EcmaArray(ref p) if p.len() == 3));
        // Missing end sequence: strict.
        assert_eq!(decode_all(&b[..b.len() - 3]), Err(AmfError::Truncated));
        all_prefixes_fail(&b[array_at..]);
    }

    #[test]
    fn avmplus_switch_to_amf3_object() {
        let mut b = str_val("connect");
        b.extend(num_val(1.0));
        // 0x11, then AMF3: dynamic anonymous object {app: "live", n: 7}.
        b.extend_from_slice(&[AVMPLUS, 0x0A, 0x0B, 0x01]);
        b.extend_from_slice(&[0x07, b'a', b'p', b'p', 0x06, 0x09, b'l', b'i', b'v', b'e']);
        b.extend_from_slice(&[0x03, b'n', 0x04, 0x07, 0x01]);
        // A second switch has a fresh context: string ref #0 is unknown there.
        let mut bad = b.clone();
        bad.extend_from_slice(&[AVMPLUS, 0x06, 0x00]);
        b.extend(str_val("after"));

        let v = decode_all(&b).unwrap();
        assert_eq!(
            v,
            vec![
                s("connect"),
                n(1.0),
                obj(&[("app", s("live")), ("n", n(7.0))]),
                s("after")
            ]
        );
        assert_eq!(decode_all(&bad), Err(AmfError::BadReference));
        // Switch inside an AMF0 object, with an AMF3 string reference.
        let mut b = vec![OBJECT];
        b.extend(utf8("list"));
        b.extend_from_slice(&[AVMPLUS, 0x09, 0x05, 0x01, 0x06, 0x03, b'q', 0x06, 0x00]);
        b.extend_from_slice(&[0, 0, OBJECT_END]);
        let (v, used) = decode(&b).unwrap();
        assert_eq!(used, b.len());
        assert_eq!(
            v,
            obj(&[("list", Value::StrictArray(vec![s("q"), s("q")]))])
        );
        all_prefixes_fail(&b);
    }

    #[test]
    fn references_and_other_markers() {
        // [ {a:1}, ref #1, typed object, date, unsupported, xml ]
        let mut b = vec![STRICT_ARRAY, 0, 0, 0, 6, OBJECT];
        b.extend(utf8("a"));
        b.extend(num_val(1.0));
        b.extend_from_slice(&[0, 0, OBJECT_END, REFERENCE, 0, 1, TYPED_OBJECT]);
        b.extend(utf8("com.example.Foo"));
        b.extend(utf8("x"));
        b.extend_from_slice(&[NULL, 0, 0, OBJECT_END, DATE]);
        b.extend_from_slice(&5000.0f64.to_be_bytes());
        b.extend_from_slice(&[0xFF, 0x88, UNSUPPORTED, XML_DOCUMENT, 0, 0, 0, 3]);
        b.extend_from_slice(b"<a>");
        let (v, used) = decode(&b).unwrap();
        assert_eq!(used, b.len());
        let a = obj(&[("a", n(1.0))]);
        assert_eq!(
            v,
            Value::StrictArray(vec![
                a.clone(),
                a,
                obj(&[("x", Value::Null)]),
                Value::Date(5000.0),
                Value::Undefined,
                Value::Xml("<a>".into()),
            ])
        );
        all_prefixes_fail(&b);
        // References across the values of one command body.
        let mut b = vec![OBJECT];
        b.extend(utf8("k"));
        b.extend_from_slice(&[NULL, 0, 0, OBJECT_END, REFERENCE, 0, 0]);
        let v = decode_all(&b).unwrap();
        assert_eq!(v[0], v[1]);
        // Unknown index; a cycle (reference to the array being decoded).
        assert_eq!(decode(&[REFERENCE, 0, 0]), Err(AmfError::BadReference));
        assert_eq!(
            decode(&[STRICT_ARRAY, 0, 0, 0, 1, REFERENCE, 0, 0]),
            Err(AmfError::BadReference)
        );
    }

    #[test]
    fn bad_input_is_rejected() {
        assert_eq!(decode(&[]), Err(AmfError::Truncated));
        assert_eq!(decode(&[OBJECT_END]), Err(AmfError::UnknownMarker(0x09)));
        assert_eq!(decode(&[0x04]), Err(AmfError::UnknownMarker(0x04)));
        assert_eq!(decode(&[0x0E]), Err(AmfError::UnknownMarker(0x0E)));
        assert_eq!(decode(&[0x12]), Err(AmfError::UnknownMarker(0x12)));
        assert_eq!(decode(&[STRING, 0, 1, 0xC3]), Err(AmfError::BadUtf8));
        // A non-empty key followed by object-end is not an end sequence.
        let mut b = vec![OBJECT];
        b.extend(utf8("k"));
        b.push(OBJECT_END);
        assert_eq!(decode(&b), Err(AmfError::UnknownMarker(0x09)));
        // decode_all: trailing partial value.
        let mut b = str_val("x");
        b.push(NUMBER);
        assert_eq!(decode_all(&b), Err(AmfError::Truncated));
        assert_eq!(decode_all(&[]), Ok(vec![]));
        // Externalizable AMF3 behind the switch.
        assert_eq!(
            decode(&[AVMPLUS, 0x0A, 0x07, 0x01]),
            Err(AmfError::UnknownMarker(0x0A))
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |levels: usize| {
            let mut b = Vec::new();
            for _ in 0..levels {
                b.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1]);
            }
            b.push(NULL);
            b
        };
        assert!(decode(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(decode(&nested(MAX_DEPTH + 1)), Err(AmfError::TooDeep));
        assert_eq!(decode(&nested(100_000)), Err(AmfError::TooDeep));
        let mut objs = Vec::new();
        for _ in 0..100_000 {
            objs.push(OBJECT);
            objs.extend(utf8("a"));
        }
        assert_eq!(decode(&objs), Err(AmfError::TooDeep));
        // AMF3 inside AMF0 continues the same depth count.
        let mut b = nested(MAX_DEPTH - 1);
        b.pop();
        b.extend_from_slice(&[AVMPLUS, 0x09, 0x03, 0x01, 0x01]);
        assert!(decode(&b).is_ok());
        let mut b = nested(MAX_DEPTH);
        b.pop();
        b.extend_from_slice(&[AVMPLUS, 0x09, 0x03, 0x01, 0x01]);
        assert_eq!(decode(&b), Err(AmfError::TooDeep));
        // A reference brings its own height: value #0 is 32 deep, so placing
        // it one level down would make 33.
        let mut b = nested(MAX_DEPTH);
        b.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 1, REFERENCE, 0, 0]);
        assert_eq!(decode_all(&b), Err(AmfError::TooDeep));
    }

    #[test]
    fn huge_counts_fail_before_allocating() {
        assert_eq!(
            decode(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, NULL]),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode(&[LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a']),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode(&[XML_DOCUMENT, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(AmfError::Truncated)
        );
        assert_eq!(
            decode(&[STRING, 0xFF, 0xFF, b'a']),
            Err(AmfError::Truncated)
        );
        // The ECMA count is only a hint: a huge one costs nothing.
        assert_eq!(
            decode(&[ECMA_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, OBJECT_END]).unwrap(),
            (Value::EcmaArray(vec![]), 8)
        );
    }

    #[test]
    fn reference_bomb_is_bounded() {
        // #1 = [1000-byte string]; #k+1 = [ref #k, ref #k]: doubling per 11 bytes.
        let mut b = vec![STRICT_ARRAY, 0, 0, 0, 31, STRICT_ARRAY, 0, 0, 0, 1];
        b.extend(str_val(&"a".repeat(1000)));
        for k in 1..31u8 {
            b.extend_from_slice(&[STRICT_ARRAY, 0, 0, 0, 2, REFERENCE, 0, k, REFERENCE, 0, k]);
        }
        assert_eq!(decode(&b), Err(AmfError::BadLength));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = Vec::new();
        encode_all(
            &[
                s("connect"),
                n(1.0),
                obj(&[
                    ("app", s("live")),
                    ("list", Value::StrictArray(vec![n(1.0), Value::Null])),
                ]),
                Value::EcmaArray(vec![("k".into(), Value::Date(1.0))]),
                Value::ByteArray(vec![1, 2, 3]),
            ],
            &mut valid,
        );
        for i in 0..20_000 {
            let mut b = if i % 2 == 0 {
                valid.clone()
            } else {
                (0..(next() % 64)).map(|_| (next() % 0x13) as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if b.is_empty() {
                    break;
                }
                let at = (next() as usize) % b.len();
                b[at] = next() as u8;
            }
            if let Ok(values) = decode_all(&b) {
                let mut again = Vec::new();
                encode_all(&values, &mut again);
                let back = decode_all(&again).unwrap();
                let mut third = Vec::new();
                encode_all(&back, &mut third);
                assert_eq!(third, again);
            }
            let _ = decode(&b);
        }
    }

    #[test]
    fn eight_megabytes_of_nulls_is_refused_cheaply() {
        // The issue-15 command: one 8 MB body of AMF0 nulls peaked at 284 MB.
        let body = vec![NULL; 8 << 20];
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode_all(&body));
        assert_eq!(r, Err(AmfError::TooManyValues));
        assert!(peak < MAX_VALUES * 64, "peak {peak} bytes for 8 MB");
        // The cap is exact, for top-level values as for array elements.
        assert_eq!(decode_all(&vec![NULL; MAX_VALUES]).unwrap().len(), MAX_VALUES);
        assert_eq!(decode_all(&vec![NULL; MAX_VALUES + 1]), Err(AmfError::TooManyValues));
        let mut b = vec![STRICT_ARRAY];
        b.extend_from_slice(&(MAX_VALUES as u32).to_be_bytes());
        b.extend(std::iter::repeat_n(NULL, MAX_VALUES));
        assert_eq!(decode(&b), Err(AmfError::TooManyValues));
        // A count beyond the cap: the array grows only as values arrive.
        let mut b = vec![STRICT_ARRAY];
        b.extend_from_slice(&60_000u32.to_be_bytes());
        b.extend(std::iter::repeat_n(NULL, 60_000));
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode(&b));
        assert_eq!(r, Err(AmfError::TooManyValues));
        assert!(peak < MAX_VALUES * 64, "peak {peak} bytes");
    }

    #[test]
    fn a_command_sized_body_costs_a_small_multiple_of_itself() {
        // 64 KiB (the session's command limit) of the costliest shapes:
        // object properties with empty keys, and references to an object.
        const LEN: usize = 64 * 1024;
        let mut props = vec![OBJECT];
        while props.len() + 3 < LEN {
            props.extend_from_slice(&[0, 1, b'k', NULL]);
        }
        let mut refs = vec![OBJECT];
        for _ in 0..50 {
            refs.extend(utf8("k"));
            refs.push(NULL);
        }
        refs.extend_from_slice(&[0, 0, OBJECT_END]);
        while refs.len() + 3 < LEN {
            refs.extend_from_slice(&[REFERENCE, 0, 0]);
        }
        for body in [props, refs] {
            let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| decode_all(&body));
            assert_eq!(r, Err(AmfError::TooManyValues));
            assert!(peak < 16 * LEN, "peak {peak} bytes for {} bytes", body.len());
        }
        // The AMF3 switch draws on the same count.
        let mut b = Vec::new();
        for _ in 0..MAX_VALUES / 2 {
            b.extend_from_slice(&[NULL, AVMPLUS, 0x01]);
        }
        assert_eq!(decode_all(&b).unwrap().len(), MAX_VALUES);
        b.push(NULL);
        assert_eq!(decode_all(&b), Err(AmfError::TooManyValues));
    }
}
