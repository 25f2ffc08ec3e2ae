//! Fuzz the RTMP chunk decoder: arbitrary bytes, fed in arbitrary splits.
//!
//! Input layout: byte 0 picks a chunk size change applied before decoding
//! (including invalid sizes, which must be refused), byte 1 seeds the split
//! lengths, the rest is the chunk stream. Decoded Set Chunk Size (type 1) and
//! Abort (type 2) messages are applied the way the session does. Every
//! decoded message is then re-encoded with `ChunkEncoder` and decoded again
//! by a fresh decoder: the second pass must give back the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::rtmp::chunk::{ChunkDecoder, ChunkEncoder, RawMessage, MAX_CHUNK_SIZE};

const MAX_MESSAGE_LEN: u32 = 1 << 20;

/// Chunk sizes byte 0 can select; 0 means "keep the default".
const SIZES: [u32; 12] = [
    0,
    1,
    2,
    3,
    7,
    64,
    127,
    129,
    4096,
    65536,
    0x7fff_ffff,
    0x8000_0000,
];

fuzz_target!(|data: &[u8]| {
    let Some((&size_sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&seed, stream)) = rest.split_first() else {
        return;
    };

    let mut dec = ChunkDecoder::new(MAX_MESSAGE_LEN);
    let size = SIZES[usize::from(size_sel) % SIZES.len()];
    if size != 0 {
        let res = dec.set_chunk_size(size);
        assert_eq!(res.is_ok(), size as usize <= MAX_CHUNK_SIZE);
    }

    // Split lengths 1..=64 from a tiny xorshift seeded by byte 1.
    let mut x = u32::from(seed) | 0x100;
    let mut next_split = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 64) as usize + 1
    };

    let mut decoded: Vec<RawMessage> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    'feed: while fed < stream.len() {
        let step = next_split().min(stream.len() - fed);
        pending.extend_from_slice(&stream[fed..fed + step]);
        fed += step;
        loop {
            match dec.decode(&pending) {
                Ok((0, m)) => {
                    assert!(m.is_none(), "message without consuming input");
                    break;
                }
                Ok((n, m)) => {
                    assert!(n <= pending.len(), "consumed more than given");
                    pending.drain(..n);
                    if let Some(m) = m {
                        assert!(m.payload.len() <= MAX_MESSAGE_LEN as usize);
                        assert!((2..=65599).contains(&m.csid));
                        if m.payload.len() >= 4 {
                            let v = u32::from_be_bytes([
                                m.payload[0],
                                m.payload[1],
                                m.payload[2],
                                m.payload[3],
                            ]);
                            if m.type_id == 1 && dec.set_chunk_size(v).is_err() {
                                assert!(v == 0 || v as usize > MAX_CHUNK_SIZE);
                                break 'feed;
                            }
                            if m.type_id == 2 {
                                dec.abort(v);
                            }
                        }
                        decoded.push(m);
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                    break 'feed;
                }
            }
        }
    }

    // Round trip what was decoded.
    let mut enc = ChunkEncoder::new();
    enc.set_chunk_size(usize::from(seed % 200) + 1);
    let mut wire = Vec::new();
    for m in &decoded {
        enc.encode(
            m.csid,
            m.timestamp,
            m.type_id,
            m.stream_id,
            &m.payload,
            &mut wire,
        );
    }
    let mut dec2 = ChunkDecoder::new(MAX_MESSAGE_LEN);
    if dec2.set_chunk_size(u32::from(seed % 200) + 1).is_err() {
        unreachable!("valid chunk size refused");
    }
    let mut again = Vec::new();
    let mut pos = 0;
    while pos < wire.len() {
        match dec2.decode(&wire[pos..]) {
            Ok((0, _)) => panic!("re-encoded stream incomplete at {pos}"),
            Ok((n, m)) => {
                pos += n;
                again.extend(m);
            }
            Err(e) => panic!("re-encoded stream rejected: {e}"),
        }
    }
    assert_eq!(again, decoded);
});
