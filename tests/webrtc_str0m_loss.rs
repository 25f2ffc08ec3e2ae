//! str0m publishes to our `RtcSession` over an in-memory network that loses and reorders
//! media both ways (tests/str0m_peer), in virtual time: our NACKs reach str0m, which
//! retransmits over RTX, the holes are filled and the frames completed; what cannot be
//! repaired ends in a PLI that str0m sees and answers with a keyframe. The same seed
//! gives the same run, counter for counter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod str0m_peer;

use std::time::Duration;

use rtcbridge::config::AudioMode;
use str0m_peer::{Counters, Link, Peer};

const MS: Duration = Duration::from_millis(1);

/// 10 s of media through 5 % loss and 10 % reordering (held back 15 ms) towards us,
/// and 2 % loss of our RTCP on the way back.
fn lossy_run(seed: u64) -> Counters {
    let clean = Link::clean(10 * MS);
    let mut p = Peer::new(seed, clean, clean, AudioMode::Aac);
    assert!(p.run_until(Duration::from_secs(2), |p| p.connected), "not connected: {:?}", p.snapshot());
    p.set_links(
        Link { delay: 10 * MS, loss: 0.05, reorder: 0.10, hold: 15 * MS },
        Link { delay: 10 * MS, loss: 0.02, reorder: 0.0, hold: Duration::ZERO },
    );
    p.run_for(Duration::from_secs(10));
    // A clean last second lets the last retransmissions land.
    p.set_links(clean, clean);
    p.run_for(Duration::from_secs(1));
    p.snapshot()
}

#[test]
fn nacks_are_answered_by_str0m_and_frames_complete_despite_loss() {
    let c = lossy_run(7);
    println!("{c:#?}");
    assert_eq!(c.ended, None, "{c:?}");
    assert!(c.up_lost >= 20 && c.up_held >= 40, "the network did not hurt: {c:?}");
    // We asked, str0m counted our NACKs, and the retransmissions filled the holes.
    assert!(c.nacks > 0, "{c:?}");
    assert!(c.str0m_nacks_received > 0, "str0m saw no NACK: {c:?}");
    assert!(c.rtp_recovered >= c.up_lost / 2, "few holes filled: {c:?}");
    // Nearly every frame str0m was given comes out whole.
    assert!(c.frames_sent >= 320, "{c:?}");
    assert!(c.video_frames * 100 >= c.frames_sent * 90, "{} of {} frames completed: {c:?}", c.video_frames, c.frames_sent);
    // PLIs (periodic, and after any loss NACKs could not repair) reached str0m.
    assert!(c.plis >= 5 && c.keyframe_requests >= 3, "{c:?}");
    // Audio keeps flowing (holes are waited for, not NACKed).
    assert!(c.audio_frames >= 450, "{c:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = lossy_run(11);
    let b = lossy_run(11);
    assert_eq!(a, b, "two runs of seed 11 differ");
    let c = lossy_run(12);
    assert_ne!((a.up_lost, a.rtp_recovered, a.nacks), (c.up_lost, c.rtp_recovered, c.nacks), "another seed, the same losses");
}

#[test]
fn loss_that_nacks_cannot_repair_ends_in_a_pli_and_a_fresh_keyframe() {
    let clean = Link::clean(10 * MS);
    let dead = Link { delay: 10 * MS, loss: 1.0, reorder: 0.0, hold: Duration::ZERO };
    let mut p = Peer::new(21, clean, clean, AudioMode::None);
    assert!(p.run_until(Duration::from_secs(2), |p| p.connected));
    p.run_for(Duration::from_secs(1));
    let before = p.snapshot();
    // 300 ms without media towards us, and our NACKs lost until 200 ms after it. The
    // first video packet after the gap (10-43 ms after it) shows the holes; their NACKs
    // (at once, then every 50 ms: no RTT measured yet) all fall in the dead window, and
    // the holes are given up 200 ms after they were seen, which asks for a keyframe.
    // The periodic PLI is not due before 2 s after connecting: the one that comes is
    // the loss's.
    p.set_links(dead, dead);
    p.run_for(Duration::from_millis(300));
    p.set_links(clean, dead);
    p.run_for(Duration::from_millis(200));
    p.set_links(clean, clean);
    let ok = p.run_until(Duration::from_millis(1900), |p| p.counters.keyframe_requests > before.keyframe_requests);
    let c = p.snapshot();
    assert!(ok, "no keyframe request reached str0m before the periodic one: {c:?}");
    assert!(c.rtp_lost > before.rtp_lost, "nothing was given up: {c:?}");
    assert!(c.nacks > before.nacks, "{c:?}");
    assert_eq!(c.plis, before.plis + 1, "{c:?}");
    // str0m's answer, an IDR, comes out as a keyframe; frames flow again.
    let kf = c.keyframes;
    assert!(p.run_until(Duration::from_secs(3), |p| p.counters.keyframes > kf), "{:?}", p.snapshot());
    let frames = p.counters.video_frames;
    p.run_for(Duration::from_millis(500));
    assert!(p.counters.video_frames >= frames + 14, "{:?}", p.snapshot());
}
