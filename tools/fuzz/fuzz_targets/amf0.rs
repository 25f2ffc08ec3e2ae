#![no_main]
//! AMF0 decoder on arbitrary bytes: never panics, never produces more than
//! `MAX_VALUES` values per call (references' copies included), and whatever
//! decodes re-encodes to bytes that decode to an equal value (and re-encode
//! to the same bytes).
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::rtmp::amf::{Value, MAX_VALUES};
use rtcbridge::proto::rtmp::amf0;

fuzz_target!(|data: &[u8]| {
    if let Ok((v, used)) = amf0::decode(data) {
        assert!(used >= 1 && used <= data.len());
        assert!(nodes(&v) <= MAX_VALUES);
        if representable(&v) {
            let mut bytes = Vec::new();
            amf0::encode(&v, &mut bytes);
            let (back, back_used) = amf0::decode(&bytes).expect("re-encoded value decodes");
            assert_eq!(back_used, bytes.len());
            assert!(same(&v, &back), "{v:?} != {back:?}");
            let mut again = Vec::new();
            amf0::encode(&back, &mut again);
            assert_eq!(again, bytes);
        }
    }
    if let Ok(values) = amf0::decode_all(data) {
        assert!(values.iter().map(nodes).sum::<usize>() <= MAX_VALUES);
        if values.iter().all(representable) {
            let mut bytes = Vec::new();
            amf0::encode_all(&values, &mut bytes);
            let back = amf0::decode_all(&bytes).expect("re-encoded sequence decodes");
            assert_eq!(back.len(), values.len());
            assert!(values.iter().zip(&back).all(|(a, b)| same(a, b)));
        }
    }
});

/// Round trips are exact unless a key is too long for AMF0 (> 65535 bytes):
/// such a value is sent as AMF3, which cannot keep everything (empty ECMA
/// arrays, empty ECMA keys).
fn representable(v: &Value) -> bool {
    match v {
        Value::Object(props) | Value::EcmaArray(props) => props
            .iter()
            .all(|(k, v)| k.len() <= usize::from(u16::MAX) && representable(v)),
        Value::StrictArray(items) => items.iter().all(representable),
        _ => true,
    }
}

/// Structural equality where NaN equals NaN.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) | (Value::Date(x), Value::Date(y)) => {
            x == y || (x.is_nan() && y.is_nan())
        }
        (Value::Object(p), Value::Object(q)) | (Value::EcmaArray(p), Value::EcmaArray(q)) => {
            p.len() == q.len()
                && p.iter().zip(q).all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2))
        }
        (Value::StrictArray(p), Value::StrictArray(q)) => {
            p.len() == q.len() && p.iter().zip(q).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}

/// Values in a tree, the root included.
fn nodes(v: &Value) -> usize {
    1 + match v {
        Value::Object(p) | Value::EcmaArray(p) => p.iter().map(|(_, v)| nodes(v)).sum(),
        Value::StrictArray(items) => items.iter().map(nodes).sum(),
        _ => 0,
    }
}
