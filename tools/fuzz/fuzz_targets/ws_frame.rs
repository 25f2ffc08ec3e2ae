#![no_main]
//! WebSocket frame decoder: arbitrary bytes, fed whole and then in arbitrary splits, must
//! never panic, never consume more than given, and give the same messages either way.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::ws::{WsDecoder, WsMessage};

fn run(dec: &mut WsDecoder, chunks: &[&[u8]]) -> (Vec<WsMessage>, Option<u16>) {
    let mut acc: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        acc.extend_from_slice(chunk);
        loop {
            match dec.decode(&acc) {
                Ok((n, msg)) => {
                    assert!(n <= acc.len());
                    out.extend(msg);
                    if n == 0 {
                        break;
                    }
                    acc.drain(..n);
                }
                Err(e) => return (out, Some(e.close_code())),
            }
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the message limit and the split size, so small limits get exercised.
    let Some((&knob, rest)) = data.split_first() else { return };
    let max = 16usize << (knob & 0x0f);
    let split = usize::from(knob >> 4) + 1;
    let whole = run(&mut WsDecoder::with_max_message(max), &[rest]);
    let pieces: Vec<&[u8]> = rest.chunks(split).collect();
    let split_run = run(&mut WsDecoder::with_max_message(max), &pieces);
    assert_eq!(whole, split_run);
    for m in &whole.0 {
        match m {
            WsMessage::Ping(p) | WsMessage::Pong(p) => assert!(p.len() <= 125),
            WsMessage::Text(t) => assert!(t.len() <= max),
            WsMessage::Binary(b) => assert!(b.len() <= max),
            WsMessage::Close(_, r) => assert!(r.len() <= 123),
        }
    }
    let _ = run(&mut WsDecoder::for_client(max), &[rest]);
});
