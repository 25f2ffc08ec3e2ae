//! Fuzz the RTMP handshake server: arbitrary bytes, fed in arbitrary splits.
//!
//! The first 8 bytes of the input seed the split lengths (and the server's
//! PRNG); the rest is what the "client" sends. Optionally force C0 = 3 so the
//! fuzzer spends its time past the version check: the low bit of the first
//! seed byte decides.
//!
//! Checked on every call: no panic; never more consumed than offered; a short
//! read only once done; S0S1S2 written whole (3073 bytes) or not at all, and
//! exactly when `kind()` becomes known; errors only from C0 and sticky; once
//! done, nothing more is consumed or written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::rtmp::handshake::{HandshakeServer, HANDSHAKE_SIZE, RTMP_VERSION};

const RESPONSE_LEN: usize = 1 + 2 * HANDSHAKE_SIZE;

fn next(state: &mut u64) -> u64 {
    // xorshift64*; the state must not be zero.
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 8];
    for (d, s) in seed_bytes.iter_mut().zip(head) {
        *d = *s;
    }
    let seed = u64::from_le_bytes(seed_bytes);
    let force_c0 = seed & 1 == 1;
    let mut rng = seed | 1;

    let mut stream = Vec::with_capacity(body.len() + 1);
    if force_c0 {
        stream.push(RTMP_VERSION);
    }
    stream.extend_from_slice(body);

    let mut server = HandshakeServer::new(seed, (seed >> 32) as u32);
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut total = 0usize;
    while pos < stream.len() {
        let len = match next(&mut rng) % 4 {
            0 => 1,
            1 => 1 + (next(&mut rng) % 16) as usize,
            2 => 1 + (next(&mut rng) % (2 * HANDSHAKE_SIZE as u64)) as usize,
            _ => stream.len() - pos,
        };
        let end = pos.saturating_add(len).min(stream.len());
        let chunk = stream.get(pos..end).unwrap_or_default();
        let was_done = server.is_done();
        let out_before = out.len();
        match server.handle_input(chunk, &mut out) {
            Ok(n) => {
                assert!(n <= chunk.len(), "consumed more than offered");
                total += n;
                assert!(total <= RESPONSE_LEN, "consumed past C2");
                if n < chunk.len() {
                    assert!(server.is_done(), "short read before the end of C2");
                }
                if was_done {
                    assert_eq!(n, 0, "consumed after done");
                    assert_eq!(out.len(), out_before, "wrote after done");
                }
                pos += n;
                if server.is_done() && pos < stream.len() {
                    // The rest is chunk stream: offered again, it stays unconsumed.
                    let rest = stream.get(pos..).unwrap_or_default();
                    assert_eq!(server.handle_input(rest, &mut out), Ok(0));
                    break;
                }
            }
            Err(err) => {
                assert_eq!(total, 0, "only C0 can be refused");
                assert!(out.is_empty(), "wrote before refusing");
                assert!(!server.is_done());
                assert!(server.kind().is_none());
                assert_eq!(server.handle_input(&[RTMP_VERSION], &mut out), Err(err));
                assert!(!err.to_string().is_empty());
                break;
            }
        }
        assert!(
            out.is_empty() || out.len() == RESPONSE_LEN,
            "partial response"
        );
        assert_eq!(server.kind().is_some(), !out.is_empty());
        if !out.is_empty() {
            assert_eq!(out.first(), Some(&RTMP_VERSION));
        }
    }
    if stream.first() == Some(&RTMP_VERSION) && stream.len() >= RESPONSE_LEN {
        assert!(server.is_done());
    }
});
