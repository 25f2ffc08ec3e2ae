#![no_main]
//! AMF3 decoder on arbitrary bytes: never panics, never produces more than
//! `MAX_VALUES` values per call (references' copies included), and whatever
//! decodes re-encodes (as AMF3, and as AMF0) to bytes that decode to an
//! equal value.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::rtmp::amf::{Value, MAX_VALUES};
use rtcbridge::proto::rtmp::{amf0, amf3};

fuzz_target!(|data: &[u8]| {
    if let Ok((v, used)) = amf3::decode(data) {
        assert!(used >= 1 && used <= data.len());
        check(&v);
    }
    // One context over a sequence of values: references may reach back
    // into earlier values.
    let mut decoder = amf3::Amf3Decoder::new();
    let mut rest = data;
    while !rest.is_empty() {
        let Ok((v, used)) = decoder.decode(rest) else { break };
        assert!(used >= 1 && used <= rest.len());
        check(&v);
        rest = rest.get(used..).unwrap_or_default();
    }
});

fn check(v: &Value) {
    assert!(nodes(v) <= MAX_VALUES);
    // AMF3 -> AMF3. Exact for every value the AMF3 decoder can produce.
    let mut bytes = Vec::new();
    amf3::encode(v, &mut bytes);
    let (back, used) = amf3::decode(&bytes).expect("re-encoded value decodes");
    assert_eq!(used, bytes.len());
    assert!(same(v, &back), "{v:?} != {back:?}");
    let mut again = Vec::new();
    amf3::encode(&back, &mut again);
    assert_eq!(again, bytes);

    // AMF3 -> AMF0, when AMF0 can carry every key.
    if short_keys(v) {
        let mut bytes = Vec::new();
        amf0::encode(v, &mut bytes);
        let (back, used) = amf0::decode(&bytes).expect("AMF0 re-encoding decodes");
        assert_eq!(used, bytes.len());
        assert!(same(v, &back), "{v:?} != {back:?}");
    }
}

fn short_keys(v: &Value) -> bool {
    match v {
        Value::Object(props) | Value::EcmaArray(props) => props
            .iter()
            .all(|(k, v)| k.len() <= usize::from(u16::MAX) && short_keys(v)),
        Value::StrictArray(items) => items.iter().all(short_keys),
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
