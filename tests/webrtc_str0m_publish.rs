//! str0m, a WebRTC stack we did not write, publishes H.264 + Opus to our `RtcSession`
//! over a clean in-memory network, in virtual time (tests/str0m_peer): ICE, DTLS and
//! SRTP come up, frames and AAC come out, our PLIs reach str0m, and the session's
//! timers behave (nothing happens before a deadline; an idle session wakes rarely and
//! fails by RTP inactivity).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod str0m_peer;

use std::time::Duration;

use rtcbridge::config::AudioMode;
use rtcbridge::relay::webrtc::RtcError;
use str0m_peer::{Link, Peer};

const MS: Duration = Duration::from_millis(1);

fn clean() -> Link {
    Link::clean(10 * MS)
}

#[test]
fn str0m_connects_and_its_h264_and_opus_come_out_as_flv() {
    let mut p = Peer::new(1, clean(), clean(), AudioMode::Aac);
    assert!(p.run_until(Duration::from_secs(2), |p| p.connected), "not connected: {:?}", p.snapshot());
    p.run_for(Duration::from_secs(5));
    let c = p.snapshot();
    println!("{c:#?}");
    let connected = c.connected_after.unwrap();
    assert!(connected < Duration::from_millis(500), "ICE + DTLS took {connected:?} of virtual time");
    assert!(c.str0m_connected_after.is_some(), "str0m never saw the connection up");
    assert_eq!(c.ended, None);
    // Every frame str0m was given comes out whole (a frame written in the last few
    // milliseconds may still be in flight), the first one a keyframe with its config.
    assert!(c.frames_sent >= 140, "{c:?}");
    assert!(c.video_frames + 2 >= c.frames_sent && c.video_frames <= c.frames_sent, "{c:?}");
    assert!(c.keyframes >= 1 && c.video_configs >= 1, "{c:?}");
    assert_eq!((c.units_dropped, c.rtp_lost, c.nacks), (0, 0, 0), "a clean network needs no repair: {c:?}");
    // 5 s of 20 ms Opus, transcoded to AAC (1024 samples a frame at 48 kHz).
    assert!(c.audio_frames >= 200, "{c:?}");
    // Our periodic PLI at connect time reached str0m as a keyframe request.
    assert!(c.plis >= 1 && c.keyframe_requests >= 1, "{c:?}");
    // Nothing str0m sent was discarded (no SRTP failure, no unknown payload type).
    assert!(c.drops.is_empty(), "{c:?}");
}

#[test]
fn request_keyframe_reaches_str0m_as_a_pli() {
    let mut p = Peer::new(2, clean(), clean(), AudioMode::None);
    assert!(p.run_until(Duration::from_secs(2), |p| p.connected));
    p.run_for(Duration::from_millis(700));
    let before = p.snapshot();
    let now = p.now;
    p.session.request_keyframe(now, true);
    let asked_at = p.now;
    let seen = p.run_until(Duration::from_secs(5), |p| p.snapshot().keyframe_requests > before.keyframe_requests);
    let after = p.snapshot();
    assert!(seen, "str0m saw no keyframe request: {after:?}");
    assert_eq!(after.plis, before.plis + 1);
    assert!(p.now - asked_at <= 20 * MS, "the PLI took {:?} to arrive", p.now - asked_at);
    // str0m answers with an IDR, which comes out as a keyframe.
    let kf = after.keyframes;
    assert!(p.run_until(Duration::from_secs(5), |p| p.counters.keyframes > kf));
}

#[test]
fn handle_timeout_does_nothing_before_the_deadline() {
    let mut p = Peer::new(3, clean(), clean(), AudioMode::Aac);
    assert!(p.run_until(Duration::from_secs(2), |p| p.connected));
    p.run_for(Duration::from_millis(300));
    // Drain whatever is in flight, then probe just before the session's deadline.
    let deadline = p.session.poll_timeout().expect("a connected session has a deadline");
    let before = p.snapshot();
    for early in [deadline - MS, p.now.min(deadline - MS)] {
        p.session.handle_timeout(early);
        assert!(p.session.poll_transmit().is_none(), "sent something before its deadline");
        assert!(p.session.poll_event().is_none(), "an event before its deadline");
        assert_eq!(p.session.poll_timeout(), Some(deadline));
    }
    let after = p.snapshot();
    assert_eq!((before.nacks, before.plis, before.rtp_packets), (after.nacks, after.plis, after.rtp_packets));
}

#[test]
fn an_idle_session_wakes_rarely_then_fails_by_rtp_inactivity() {
    let mut p = Peer::new(4, clean(), clean(), AudioMode::Aac);
    p.sending = false;
    assert!(p.run_until(Duration::from_secs(2), |p| p.connected));
    let woke = p.counters.session_timeouts;
    let ended = p.run_until(Duration::from_secs(30), |p| p.counters.ended.is_some());
    let c = p.snapshot();
    assert!(ended, "{c:?}");
    assert_eq!(c.ended, Some(RtcError::RtpInactivity));
    assert_eq!(RtcError::RtpInactivity.info(), "Failed by RTP activity");
    // Ten seconds after DTLS (the inactivity limit), not before.
    let after = c.ended_after.unwrap() - c.connected_after.unwrap();
    assert!((Duration::from_secs(10)..Duration::from_millis(10_100)).contains(&after), "ended {after:?} after connecting");
    // An RR a second and a PLI every two seconds, plus a few at the start: not the
    // thousand wake-ups of a fixed 10 ms tick.
    let wakeups = c.session_timeouts - woke;
    assert!(wakeups <= 25, "{wakeups} wake-ups in 10 s idle: {c:?}");
    assert_eq!(p.session.poll_timeout(), None, "an ended session has no deadline");
}
