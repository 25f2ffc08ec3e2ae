#![no_main]
//! The whole RTMP server session after a valid handshake: chunk stream,
//! control messages, AMF commands. Any input must end in Ok or a typed Err.
//! Odd first byte: the peer never reads, with a small output budget; the
//! replies the session queued may exceed that budget by at most what one
//! message can produce, and a command never more than its size limit.
use libfuzzer_sys::fuzz_target;
use rtcbridge::buf::SendQueue;
use rtcbridge::proto::rtmp::handshake::HandshakeClient;
use rtcbridge::proto::rtmp::session::{RtmpSession, SessionLimits};

const BUDGET: usize = 4096;
const MAX_COMMAND: u32 = 2048;

fuzz_target!(|data: &[u8]| {
    let never_reads = data.first().is_some_and(|b| b & 1 == 1);
    let mut s = RtmpSession::new(7, 0, 1 << 20, 4096);
    if never_reads {
        s = s.with_limits(SessionLimits { max_command: MAX_COMMAND, output_budget: BUDGET });
    }
    let mut q = SendQueue::new();
    let mut c1 = Vec::new();
    let mut hc = HandshakeClient::new(9, 0, &mut c1);
    let _ = s.handle_input(&c1, &mut q);
    let mut s_bytes = Vec::new();
    let _ = q.write_to(&mut s_bytes);
    let mut c2 = Vec::new();
    let _ = hc.handle_input(&s_bytes, &mut c2);
    let _ = s.handle_input(&c2, &mut q);
    // Feed in two parts to exercise partial chunks.
    let split = data.first().map(|b| *b as usize).unwrap_or(0).min(data.len());
    let (a, b) = data.split_at(split);
    let mut buf = a.to_vec();
    for part in [a, b] {
        if !std::ptr::eq(part, a) {
            buf.extend_from_slice(part);
        }
        let r = s.handle_input(&buf, &mut q);
        if never_reads {
            // A message's replies echo at most its own bytes, plus fixed text.
            assert!(q.len() <= BUDGET + 2 * MAX_COMMAND as usize + 4096, "{} bytes queued", q.len());
        }
        match r {
            Ok(n) => {
                assert!(n <= buf.len());
                buf.drain(..n);
            }
            Err(_) => return,
        }
        while s.poll_event().is_some() {}
        if !never_reads {
            let mut sink = Vec::new();
            let _ = q.write_to(&mut sink);
        }
    }
});
