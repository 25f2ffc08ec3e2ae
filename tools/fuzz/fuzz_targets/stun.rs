//! STUN parser and ICE-lite agent: arbitrary datagrams, and arbitrary attributes wrapped in
//! a correctly authenticated request so the post-authentication paths are reached too.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::ice::{username_local_part, IceAnswer, IceLite};
use rtcbridge::proto::stun::{self, StunClass, StunMethod, StunWriter};

const LUFRAG: &str = "srv1";
const LPWD: &str = "server-password-0123456789";

fn exercise(msg: &stun::StunMessage<'_>) {
    let _ = (msg.username(), msg.priority(), msg.use_candidate(), msg.ice_controlling(), msg.ice_controlled());
    let _ = (msg.software(), msg.error_code(), msg.xor_mapped_address(), msg.fingerprint());
    let _ = (msg.unknown_required(), msg.verify_integrity(LPWD.as_bytes()), msg.verify_fingerprint());
    let _ = (msg.attributes().count(), username_local_part(msg));
}

fn feed(datagram: &[u8]) {
    let _ = stun::is_stun(datagram);
    let Ok(msg) = stun::parse(datagram) else { return };
    exercise(&msg);
    let t0 = Instant::now();
    let mut ice = IceLite::new(LUFRAG.into(), LPWD.into(), Some("brws".into()), None, t0);
    let from: SocketAddr = "192.0.2.1:5000".parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut out = Vec::new();
    if let Ok(answer) = ice.handle_stun(t0, from, &msg, &mut out) {
        if matches!(answer, IceAnswer::Dropped(_)) {
            assert!(out.is_empty());
        } else {
            let reply = stun::parse(&out).expect("our answers parse");
            assert!(reply.verify_fingerprint());
            exercise(&reply);
        }
    }
    while ice.poll_event().is_some() {}
    ice.handle_timeout(t0 + Duration::from_secs(60));
    while ice.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        feed(rest);
        return;
    }
    // Attributes as (type: 2 bytes, length: 1 byte, value) records, in a request that
    // carries a valid USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
    let mut buf = Vec::new();
    let mut w = StunWriter::new(&mut buf, StunClass::Request, StunMethod::BINDING, [7; 12]);
    if mode & 2 != 0 {
        w.username(&format!("{LUFRAG}:brws"));
    }
    let mut rest = rest;
    while let [t0, t1, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (value, next) = tail.split_at(n);
        w.attribute(u16::from_be_bytes([*t0, *t1]), value);
        rest = next;
    }
    if w.finish(Some(LPWD.as_bytes()), mode & 4 != 0).is_ok() {
        feed(&buf);
    }
});
