#![no_main]
//! SDP offer parser, negotiation and answer writer, receiving (publishers) and
//! sending (WebRTC playback): never panic, and every answer we write must parse
//! again with the same number of sections.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::sdp::{build_answer, build_answer_send, negotiate, negotiate_send, parse_offer, CodecPrefs, LocalParams, SendParams};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(offer) = parse_offer(text) else { return };
    let local = LocalParams {
        ice_ufrag: "fuzz".into(),
        ice_pwd: "0123456789abcdefghijkl".into(),
        fingerprint_sha256: ["AB"; 32].join(":"),
        candidates: vec![
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 20000),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 20001),
        ],
        session_id: u64::MAX,
    };
    for prefs in [
        CodecPrefs::default(),
        CodecPrefs { allow_g711: false, require_video_codec: false },
    ] {
        let Ok(neg) = negotiate(&offer, &prefs) else { continue };
        assert!(neg.video.is_some() || neg.audio.is_some());
        let answer = build_answer(&offer, &neg, &local);
        let again = parse_offer(&answer).expect("our own answer must parse");
        assert_eq!(again.media.len(), offer.media.len());
    }
    if let Ok(mut neg) = negotiate_send(&offer) {
        if let Some((pt, plid)) = neg.video.as_ref().and_then(|v| v.h264_formats.last().copied()) {
            neg.use_video_format(pt, plid);
        }
        let send = SendParams { video_ssrc: 1, audio_ssrc: 2, cname: "c".into(), stream_id: "s".into() };
        let answer = build_answer_send(&offer, &neg, &local, &send);
        let again = parse_offer(&answer).expect("our own sending answer must parse");
        assert_eq!(again.media.len(), offer.media.len());
    }
});
