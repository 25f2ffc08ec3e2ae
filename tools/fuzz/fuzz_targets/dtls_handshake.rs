#![no_main]
//! The DTLS server of WebRTC ingest (`src/proto/dtls.rs`) in every state of
//! a real handshake: a client of our own (`DtlsTestClient`, as a browser
//! would) talks to it, and the fuzz input mutates the datagrams the client
//! sends: records `datagram index u8 | op u8 | position u16 | value u8`, op 0
//! XOR a byte, 1 truncate, 2 drop the datagram, 3 send it twice, 4 insert a
//! byte. Time advances 1.1 s per round, so retransmissions happen too.
//!
//! Nothing may panic; a handshake that completes must give keys of the
//! suite's lengths. (The test client is not guarded like the server: if the
//! engine panics on the client's side, the round ends there.)
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

#[path = "dtls_common.rs"]
mod dtls_common;
use dtls_common::{drain, let_engine_panics_unwind};
use rtcbridge::proto::dtls::{parse_fingerprint, DtlsIdentity, DtlsServer, DtlsTestClient};

struct Fixture {
    server: DtlsIdentity,
    client: DtlsIdentity,
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
        Fixture { server, client, client_fp, t0: rtcbridge::runtime::now() }
    })
}

fuzz_target!(|data: &[u8]| mutated_handshake(fixture(), data));

fn mutated_handshake(f: &Fixture, data: &[u8]) {
    let mut now = f.t0;
    let mut server = DtlsServer::new(&f.server, f.client_fp.clone(), now);
    let mut client = DtlsTestClient::new(&f.client, now);
    let mutations: Vec<&[u8]> = data.chunks_exact(5).collect();
    let mut index = 0u8;
    for _round in 0..12 {
        let mut to_server = Vec::new();
        let Ok(datagrams) = catch_unwind(AssertUnwindSafe(|| client.poll_datagrams())) else { return };
        for mut d in datagrams {
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
            if catch_unwind(AssertUnwindSafe(|| client.handle_datagram(&d))).is_err() {
                return;
            }
        }
        if server.is_connected() && client.keying_material.is_some() {
            return;
        }
        now += Duration::from_millis(1100);
        if server.handle_timeout(now).is_err() {
            return;
        }
        if catch_unwind(AssertUnwindSafe(|| client.handle_timeout(now))).is_err() {
            return;
        }
    }
}
