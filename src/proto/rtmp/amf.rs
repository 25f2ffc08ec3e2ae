//! The value model shared by the AMF0 and AMF3 codecs.

/// A decoded AMF value. AMF0 and AMF3 both decode into this one type so that
/// command handling does not care which encoding the client chose.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// Anonymous or typed object; keys in wire order. Typed objects keep their
    /// class name out of band (commands never need it).
    Object(Vec<(String, Value)>),
    /// AMF0 ECMA array (associative), e.g. the body of `onMetaData`.
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    Null,
    Undefined,
    /// Milliseconds since the epoch.
    Date(f64),
    Xml(String),
    /// AMF3 ByteArray.
    ByteArray(Vec<u8>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Xml(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    /// Look up a property of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(props) | Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Why an AMF payload could not be decoded. Static context only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmfError {
    /// Input ended inside a value.
    Truncated,
    /// A type marker this codec does not know.
    UnknownMarker(u8),
    /// Nesting deeper than `MAX_DEPTH`.
    TooDeep,
    /// A length, count or reference index that cannot be valid.
    BadLength,
    /// A reference to a string/object/trait that was never defined.
    BadReference,
    /// Text that is not UTF-8.
    BadUtf8,
    /// More than [`MAX_VALUES`] values in one message (counting the copies
    /// references bring in): the decoded tree would cost tens of bytes per
    /// input byte.
    TooManyValues,
}

impl std::fmt::Display for AmfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmfError::Truncated => f.write_str("AMF value truncated"),
            AmfError::UnknownMarker(m) => write!(f, "unknown AMF marker 0x{m:02x}"),
            AmfError::TooDeep => f.write_str("AMF nesting too deep"),
            AmfError::BadLength => f.write_str("AMF length or count out of range"),
            AmfError::BadReference => f.write_str("AMF reference to undefined entry"),
            AmfError::BadUtf8 => f.write_str("AMF string is not UTF-8"),
            AmfError::TooManyValues => write!(f, "AMF message has more than {MAX_VALUES} values"),
        }
    }
}

/// Nesting limit for objects and arrays (STYLE.md: bounded everything).
pub const MAX_DEPTH: usize = 32;

/// Most values one decode call (one message body) may produce, counting every
/// node of the result: scalars, containers, property values, and each node a
/// reference copies in. A decoded value costs 32 bytes (56 as an object
/// property) however few input bytes it took (a null is one byte), so without
/// this cap an 8 MB body of nulls decodes into 256 MB. With it, a message
/// decodes into at most `MAX_VALUES` × 56 bytes (≈ 460 KB) plus its string
/// bytes, whatever its size. Real commands and metadata have tens of values:
/// ffmpeg's connect 5, Flash's 15, onMetaData 20–40.
pub const MAX_VALUES: usize = 8192;
