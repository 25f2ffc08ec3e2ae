#![no_main]
//! The DTLS server of WebRTC ingest (`src/proto/dtls.rs`) against hostile
//! datagrams. The first byte picks a mode:
//!
//! - even: a fresh server gets records `op u8 | len u8 | bytes[len]`. `op & 3`
//!   selects how the bytes are sent: 0 as they are; 1 behind a DTLS 1.2
//!   record header (content type from `op >> 2`: 20–23 map to CCS, alert,
//!   handshake, application data), 2 behind a record and a handshake header
//!   (message type from `op >> 2`), so the fuzzer reaches the handshake
//!   parser without first learning the framing; 3 advances time by
//!   `(op >> 2) * 100 ms` and fires the server's timeout.
//! - odd: a real handshake with a client of our own (every state a browser
//!   reaches), where the fuzz input mutates the datagrams the client sends:
//!   records `datagram index u8 | op u8 | position u16 | value u8`, op 0
//!   XOR a byte, 1 truncate, 2 drop the datagram, 3 send it twice, 4 insert
//!   a byte.
//!
//! Nothing may panic; a handshake that completes must give keys of the
//! suite's lengths that the client agrees with.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::dtls::{parse_fingerprint, DtlsEvent, DtlsIdentity, DtlsServer, DtlsTestClient};

struct Fixture {
    server: DtlsIdentity,
    client: DtlsIdentity,
    client_fp: Vec<u8>,
    t0: Instant,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let server = DtlsIdentity::generate().expect("server certificate");
        let client = DtlsIdentity::generate().expect("client certificate");
        let client_fp = parse_fingerprint(&client.fingerprint).expect("fingerprint");
        Fixture { server, client, client_fp, t0: rtcbridge::runtime::now() }
    })
}

/// Drain the server; false once it failed (the session would end).
fn drain(s: &mut DtlsServer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(p) = s.poll_transmit() {
        out.push(p);
    }
    while let Some(ev) = s.poll_event() {
        if let DtlsEvent::Connected(keys) = ev {
            let (k, salt) = keys.suite.key_salt_len();
            assert_eq!((keys.remote_key.len(), keys.local_key.len()), (k, k));
            assert_eq!((keys.remote_salt.len(), keys.local_salt.len()), (salt, salt));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let f = fixture();
    if mode % 2 == 0 {
        raw_datagrams(f, rest);
    } else {
        mutated_handshake(f, rest);
    }
});

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
            1 => record(20 + kind % 4, seq, bytes),
            2 => {
                let mut hs = vec![kind % 25];
                hs.extend_from_slice(&u24(bytes.len()));
                hs.extend_from_slice(&(seq as u16).to_be_bytes()); // message_seq
                hs.extend_from_slice(&[0, 0, 0]); // fragment_offset
                hs.extend_from_slice(&u24(bytes.len()));
                hs.extend_from_slice(bytes);
                record(22, seq, &hs)
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

/// DTLS 1.2 record (RFC 6347 §4.1): type, version {254, 253}, epoch 0,
/// 48-bit sequence number, length, fragment.
fn record(content_type: u8, seq: u64, fragment: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xFE, 0xFD, 0, 0];
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&(fragment.len().min(0xFFFF) as u16).to_be_bytes());
    r.extend_from_slice(fragment);
    r
}

fn u24(n: usize) -> [u8; 3] {
    let b = (n as u32).to_be_bytes();
    [b[1], b[2], b[3]]
}

fn mutated_handshake(f: &Fixture, data: &[u8]) {
    let mut now = f.t0;
    let mut server = DtlsServer::new(&f.server, f.client_fp.clone(), now);
    let mut client = DtlsTestClient::new(&f.client, now);
    let mutations: Vec<&[u8]> = data.chunks_exact(5).collect();
    let mut index = 0u8;
    for _round in 0..12 {
        let mut to_server = Vec::new();
        for mut d in client.poll_datagrams() {
            let mut copies = 1;
            for m in mutations.iter().filter(|m| m[0] == index) {
                let pos = usize::from(u16::from_be_bytes([m[2], m[3]]));
                match m[1] % 5 {
                    0 if !d.is_empty() => {
                        let at = pos % d.len();
                        d[at] ^= m[4].max(1);
                    }
                    1 => d.truncate(pos % (d.len() + 1)),
                    2 => copies = 0,
                    3 => copies = 2,
                    4 => d.insert(pos % (d.len() + 1), m[4]),
                    _ => {}
                }
            }
            index = index.wrapping_add(1);
            for _ in 0..copies {
                to_server.push(d.clone());
            }
        }
        for d in &to_server {
            if server.handle_datagram(d).is_err() {
                return;
            }
        }
        for d in drain(&mut server) {
            let _ = client.handle_datagram(&d);
        }
        if server.is_connected() && client.keying_material.is_some() {
            return;
        }
        now += Duration::from_millis(1100);
        if server.handle_timeout(now).is_err() {
            return;
        }
        let _ = client.handle_timeout(now);
    }
}
