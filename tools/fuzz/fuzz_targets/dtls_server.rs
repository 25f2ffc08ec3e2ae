#![no_main]
//! The DTLS server of WebRTC ingest (`src/proto/dtls.rs`) against hostile
//! datagrams, in every state reachable without a handshake: a fresh server
//! gets records `op u8 | len u8 | bytes[len]`. `op & 3` selects how the bytes
//! are sent: 0 as they are; 1 behind a DTLS 1.2 record header (bits 2–3 of
//! `op`: content type CCS, alert, handshake, application data; bit 4: epoch
//! 1 instead of 0; bits 5–7: the record sequence number, so records repeat);
//! 2 behind a record and a handshake header (message type from `op >> 2`,
//! sequence numbers counting up), so the fuzzer reaches the handshake parser
//! without first learning the framing; 3 advances time by
//! `(op >> 2) * 100 ms` and fires the server's timeout. (`dtls_handshake` covers the states after a real ClientHello.)
//!
//! Nothing may panic; a handshake that completes must give keys of the
//! suite's lengths.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

#[path = "dtls_common.rs"]
mod dtls_common;
use dtls_common::{drain, let_engine_panics_unwind};
use rtcbridge::proto::dtls::{parse_fingerprint, DtlsIdentity, DtlsServer};

struct Fixture {
    server: DtlsIdentity,
    /// The fingerprint a browser's offer would announce.
    client_fp: Vec<u8>,
    t0: Instant,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let_engine_panics_unwind();
        let server = DtlsIdentity::generate().expect("server certificate");
        let client = DtlsIdentity::generate().expect("client certificate");
        let client_fp = parse_fingerprint(&client.fingerprint).expect("fingerprint");
        Fixture { server, client_fp, t0: rtcbridge::runtime::now() }
    })
}

fuzz_target!(|data: &[u8]| raw_datagrams(fixture(), data));

fn raw_datagrams(f: &Fixture, mut rest: &[u8]) {
    let mut now = f.t0;
    let mut s = DtlsServer::new(&f.server, f.client_fp.clone(), now);
    let mut seq: u64 = 0;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let kind = op >> 2;
        let datagram = match op & 3 {
            0 => bytes.to_vec(),
            1 => record(20 + (kind & 3), u16::from((kind >> 2) & 1), u64::from(kind >> 3), bytes),
            2 => {
                let mut hs = vec![kind % 25];
                hs.extend_from_slice(&u24(bytes.len()));
                hs.extend_from_slice(&(seq as u16).to_be_bytes()); // message_seq
                hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
                hs.extend_from_slice(&u24(bytes.len()));
                hs.extend_from_slice(bytes);
                record(22, 0, seq, &hs)
            }
            _ => {
                now += Duration::from_millis(100 * u64::from(kind));
                if s.handle_timeout(now).is_err() {
                    return;
                }
                let _ = drain(&mut s);
                continue;
            }
        };
        seq += 1;
        if s.handle_datagram(&datagram).is_err() {
            return;
        }
        let _ = drain(&mut s);
    }
}

/// DTLS 1.2 record (RFC 6347 §4.1): type, version {254, 253}, epoch,
/// 48-bit sequence number, length, fragment.
fn record(content_type: u8, epoch: u16, seq: u64, fragment: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xFE, 0xFD];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&(fragment.len().min(0xFFFF) as u16).to_be_bytes());
    r.extend_from_slice(fragment);
    r
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}
