//! Fuzz the RTP header parser, the extension iterator, RTX unwrapping and the
//! per-SSRC receiver.
//!
//! Pass 1: the whole input as one RTP packet. Whatever parses must have a
//! payload inside the input; extension iteration ends; every element read as
//! an RFC 5450 transmission offset stays 24-bit signed; a packet whose
//! extensions are all one-byte-encodable re-encodes (header + payload) to a
//! packet that parses to the same fields.
//! Pass 2: the input as 6-byte records (seq, ts, time step, flags) driving an
//! `RtpReceiver` and a `TwccRecorder`: released packets must be strictly
//! ascending and never padding; NACK lists build into valid RTCP; feedback
//! parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::rtcp::{self, RtcpPacket};
use rtcbridge::proto::rtp::{self, RtpHeader};
use rtcbridge::proto::rtp_recv::{unwrap_rtx, RtpReceiver, TwccRecorder, REORDER_SLOTS};
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    packet(data);
    receiver(data);
});

fn packet(data: &[u8]) {
    let _ = rtp::is_rtcp(data);
    let Ok(p) = rtp::parse(data) else { return };
    assert!(p.payload.len() + usize::from(p.padding) + 12 <= data.len());
    let exts: Vec<(u8, &[u8])> = p.extensions().collect();
    assert!(exts.iter().all(|&(id, _)| id != 0));
    let _ = p.extension(exts.first().map_or(1, |e| e.0));
    for &(_, b) in &exts {
        if let Some(t) = rtp::transmission_offset(b) {
            assert!((-(1 << 23)..(1 << 23)).contains(&t), "toffset is 24-bit signed");
        }
    }
    let _ = unwrap_rtx(p.payload);
    let encodable = exts.iter().all(|&(id, b)| (1..=14).contains(&id) && (1..=16).contains(&b.len()));
    if encodable {
        let h = RtpHeader { marker: p.marker, pt: p.pt, seq: p.seq, ts: p.ts, ssrc: p.ssrc };
        let mut out = Vec::new();
        rtp::write_header(&h, &exts, &mut out).expect("encodable header");
        out.extend_from_slice(p.payload);
        let q = rtp::parse(&out).expect("re-encoded packet parses");
        assert_eq!((q.marker, q.pt, q.seq, q.ts, q.ssrc), (p.marker, p.pt, p.seq, p.ts, p.ssrc));
        assert_eq!(q.payload, p.payload);
        assert_eq!(q.extensions().collect::<Vec<_>>(), exts);
    }
}

fn receiver(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut r = RtpReceiver::with_max_wait(90_000, Duration::from_millis(200), t0);
    let mut tw = TwccRecorder::new();
    let payload = [0xA5u8; 64];
    let mut last: Option<u64> = None;
    let mut nacks = Vec::new();
    let mut rtcp_out = Vec::new();
    for rec in data.chunks_exact(6) {
        let seq = u16::from_be_bytes([rec[0], rec[1]]);
        let ts = u32::from(u16::from_be_bytes([rec[2], rec[3]])) << 10;
        now += Duration::from_millis(u64::from(rec[4] % 64));
        let flags = rec[5];
        let len = usize::from(flags & 0x3f);
        let _ = r.handle_packet(now, seq, ts, flags & 0x80 != 0, &payload[..len]);
        tw.record(seq, now);
        if flags & 0x40 != 0 {
            if let Some(t) = r.poll_timeout() {
                now = now.max(t);
                r.handle_timeout(now);
            }
        }
        nacks.clear();
        r.poll_nack_into(now, &mut nacks);
        assert!(nacks.len() < REORDER_SLOTS);
        rtcp_out.clear();
        let mut rest = &nacks[..];
        while !rest.is_empty() {
            let used = rtcp::write_nack(1, 2, rest, &mut rtcp_out);
            assert!(used > 0);
            rest = &rest[used..];
        }
        while tw.poll_feedback(now, 1, 2, &mut rtcp_out) {}
        let rb = r.report_block(2, now);
        rtcp::write_rr(1, &[rb], &mut rtcp_out).expect("one block fits");
        for pkt in rtcp::parse(&rtcp_out) {
            match pkt.expect("our own RTCP parses") {
                RtcpPacket::Nack { .. } | RtcpPacket::TransportCc { .. } => {}
                RtcpPacket::ReceiverReport { reports, .. } => assert_eq!(reports.iter().next(), Some(rb)),
                other => panic!("unexpected {other:?}"),
            }
        }
        let _ = r.take_keyframe_request();
        while let Some(p) = r.poll_packet() {
            assert!(last.is_none_or(|l| p.seq > l), "released out of order");
            assert!(!p.payload.is_empty(), "padding released");
            last = Some(p.seq);
            r.recycle(p.payload);
        }
    }
}
