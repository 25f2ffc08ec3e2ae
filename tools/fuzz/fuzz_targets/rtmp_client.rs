#![no_main]
//! The RTMP push client against a hostile destination: whatever the
//! destination sends (handshake, chunk stream, control messages, AMF command
//! replies) must end in Ok or a typed Err, never a panic, and the client's
//! unread replies stay bounded. Also the destination URL parser.
//! First byte even: the input is the destination's whole output, handshake
//! included; odd: a valid server handshake first (our own server's), then the
//! input as the chunk stream (so the fuzzer spends its time on commands).
use libfuzzer_sys::fuzz_target;
use rtcbridge::buf::SendQueue;
use rtcbridge::proto::rtmp::client::{PushUrl, RtmpClient};
use rtcbridge::proto::rtmp::handshake::HandshakeServer;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(u) = PushUrl::parse(s) {
            assert!(!u.host.is_empty() && !u.key.is_empty() && u.port > 0);
        }
    }
    let Some((&mode, data)) = data.split_first() else { return };
    let url = PushUrl::parse("rtmp://127.0.0.1/live/key?token=x").expect("valid url");
    let mut q = SendQueue::new();
    let mut c = RtmpClient::new(&url, 3, 0, 4096, &mut q);
    let mut c0c1 = Vec::new();
    let _ = q.write_to(&mut c0c1);
    let mut input = Vec::new();
    if mode & 1 == 1 {
        let mut s = HandshakeServer::new(5, 0);
        let _ = s.handle_input(&c0c1, &mut input);
    }
    input.extend_from_slice(data);
    // In two parts, to exercise partial chunks.
    let split = usize::from(mode >> 1).min(input.len());
    let mut buf = Vec::new();
    for part in [&input[..split], &input[split..]] {
        buf.extend_from_slice(part);
        match c.handle_input(&buf, &mut q) {
            Ok(n) => {
                assert!(n <= buf.len());
                buf.drain(..n);
            }
            Err(_) => return,
        }
        while c.poll_event().is_some() {}
        // The destination never reads: our replies stay within the budget plus
        // what one message can produce.
        assert!(q.len() <= 4 * 65536 + 2 * 65536 + 8192, "{} bytes queued", q.len());
    }
});
