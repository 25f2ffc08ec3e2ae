//! `--push NAME=URL` (issue 11): the push starts when NAME is published, ends when the
//! stream has ended for good (after the grace window), and starts again with the next
//! publish; the destination (a second rtcbridge) receives a stream that decodes.
mod common;
#[path = "common/push.rs"]
mod push;

use common::*;
use push::*;
use std::time::Duration;

#[test]
fn push_rule_follows_the_stream_through_two_publishes() {
    let dest = Server::start(&[]);
    let dest_url = format!("rtmp://127.0.0.1:{}/live/copy", dest.rtmp_port);
    let rule = format!("cam={dest_url}");
    let server = Server::start(&["--push", &rule, "--unpublish-grace", "1"]);

    // Nothing live: no push yet.
    assert!(list_pushes(&server).is_empty(), "a rule pushes nothing before its stream is live");

    for round in 1..=2 {
        let mut publisher = Publisher::ffmpeg(&server.rtmp_url("cam"), 800);
        server.wait_stream_live("cam", Duration::from_secs(10));
        let active = wait_for_value(Duration::from_secs(10), "the rule's push pushing", || {
            list_pushes(&server).into_iter().find(|p| state(p) == "pushing")
        });
        assert_eq!(active["rule"], serde_json::Value::Bool(true), "{active}");
        assert_eq!(active["stream"], "cam", "{active}");
        dest.wait_stream_live("copy", Duration::from_secs(10));
        // The destination's own player decodes what the push delivers.
        let player = FramePlayer::start("dest player", &dest.rtmp_url("copy"), 3.0);
        let r = player.finish(Duration::from_secs(15));
        r.assert_healthy(min_video_frames(3.0, 0.8), min_audio_frames(3.0, 0.8), true);

        publisher.kill();
        // The stream ends for good after the 1 s grace window: the push stops.
        let id = active["id"].as_str().unwrap_or_default().to_owned();
        wait_push(&server, &id, Duration::from_secs(8), "the push stopped after its stream ended", |p| state(p) == "stopped");
        let all = list_pushes(&server);
        assert_eq!(all.len(), round, "one push per publish: {all:?}");
        assert!(all.iter().all(|p| state(p) == "stopped"), "{all:?}");
    }
    // Each push ended cleanly (FCUnpublish, deleteStream): the destination unpublished twice.
    wait_for(Duration::from_secs(5), "two clean unpublishes at the destination", || dest.log().matches("unpublished \"copy\"").count() == 2);
    let log = server.log();
    assert!(log.contains("stopping: stream cam ended"), "the log says why the push ended:\n{}", tail(&log, 30));
}
