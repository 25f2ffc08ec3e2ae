//! An RTMP publisher that goes silent (connected, sending nothing) loses its name after
//! `--publisher-timeout`: a waiting player then sees the usual grace window and
//! UnpublishNotify, the connection is closed with a log line that says why, and the
//! name is free for the next publisher. An innocent stream is not disturbed.
mod common;

use common::hostile::*;
use common::*;
use std::time::{Duration, Instant};

const TIMEOUT_S: u64 = 3;
const GRACE_S: u64 = 2;

#[test]
fn a_silent_rtmp_publisher_loses_its_name() {
    let (t, g) = (TIMEOUT_S.to_string(), GRACE_S.to_string());
    let server = Server::start(&["--publisher-timeout", &t, "--unpublish-grace", &g]);
    let mut innocent = Innocent::start(&server, "innocent");

    // A publisher that says `publish` and then nothing at all.
    let mut silent = RtmpClient::connect(server.rtmp_port);
    silent.connect_app("live");
    let sid = silent.create_stream();
    silent.publish(sid, "quiet");
    silent.wait_status(0, "NetStream.Publish.Start", Duration::from_secs(5));
    let t_publish = Instant::now();

    // A player waiting on it.
    let mut player = RtmpClient::connect(server.rtmp_port);
    player.start_play("quiet");
    player.wait_status(0, "NetStream.Play.Start", Duration::from_secs(5));

    let (_, rec) = player.wait_status(0, "NetStream.Play.UnpublishNotify", Duration::from_secs(TIMEOUT_S + GRACE_S + 5));
    let after = rec.at.duration_since(t_publish);
    let want = Duration::from_secs(TIMEOUT_S + GRACE_S);
    assert!(
        after >= want - Duration::from_millis(500) && after <= want + Duration::from_secs(3),
        "UnpublishNotify {after:?} after the silent publish (timeout {TIMEOUT_S} s + grace {GRACE_S} s)"
    );
    wait_for(Duration::from_secs(2), "the silent publisher's connection closed", || silent.closed());
    assert!(server.log().contains("publisher sent no media for 3 s"), "log: {}", tail(&server.log(), 10));
    assert_eq!(server.metrics().sum("rtcbridge_publisher_timeouts_total"), 1.0);

    // The name is free again: a real publisher takes it and the waiting player gets it.
    let _next = Publisher::ffmpeg(&server.rtmp_url("quiet"), 600);
    let from = player.len();
    player.wait_status(from, "NetStream.Play.PublishNotify", Duration::from_secs(10));
    player
        .wait_event(from, Duration::from_secs(10), |e| matches!(e.video_kind(), Some((true, false))))
        .unwrap_or_else(|| panic!("no keyframe from the next publisher: {}", player.describe()));
    innocent.assert_unharmed(Duration::from_secs(2), "after the silent publisher was dropped");
}
