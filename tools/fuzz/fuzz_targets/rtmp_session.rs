#![no_main]
//! The whole RTMP server session after a valid handshake: chunk stream,
//! control messages, AMF commands. Any input must end in Ok or a typed Err.
use libfuzzer_sys::fuzz_target;
use rtcbridge::buf::SendQueue;
use rtcbridge::proto::rtmp::handshake::HandshakeClient;
use rtcbridge::proto::rtmp::session::RtmpSession;

fuzz_target!(|data: &[u8]| {
    let mut s = RtmpSession::new(7, 0, 1 << 20, 4096);
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
        match s.handle_input(&buf, &mut q) {
            Ok(n) => {
                assert!(n <= buf.len());
                buf.drain(..n);
            }
            Err(_) => return,
        }
        while s.poll_event().is_some() {}
        let mut sink = Vec::new();
        let _ = q.write_to(&mut sink);
    }
});
