//! A second publisher of a live name gets NetStream.Publish.BadName; the first
//! publisher and its players carry on untouched.
mod common;

use common::*;
use std::time::Duration;

const WINDOW: f64 = 8.0;

#[test]
fn second_publisher_gets_badname_first_continues() {
    let mut server = Server::start(&[]);
    let name = "taken";
    let url = server.rtmp_url(name);
    let mut first = Publisher::ffmpeg(&url, 1500);
    server.wait_stream_live(name, Duration::from_secs(15));

    let player = FramePlayer::start("player", &url, WINDOW);
    wait_for(
        Duration::from_secs(5),
        "the player to be counted in /api/streams",
        || {
            server
                .stream(name)
                .and_then(|s| s.get("players").and_then(|p| p.as_u64()))
                .unwrap_or(0)
                >= 1
        },
    );

    // Publisher B, hand-built: connect, createStream, publish the same name.
    let mut second = RtmpClient::connect(server.rtmp_port);
    second.connect_app("live");
    let sid = second.create_stream();
    second.publish(sid, name);
    second.wait_status(0, "NetStream.Publish.BadName", Duration::from_secs(5));
    assert!(
        !second
            .events()
            .iter()
            .any(|e| e.status() == Some("NetStream.Publish.Start")),
        "the second publisher also got Publish.Start: {}",
        second.describe()
    );
    let frames_at_badname = server.video_frames(name);

    // The first publisher's frames keep arriving in the registry and at the player.
    wait_for(
        Duration::from_secs(5),
        "the stream's frame count to grow after BadName",
        || server.video_frames(name) >= frames_at_badname + 30,
    );
    let r = player.finish(Duration::from_secs(20));
    r.assert_healthy(
        min_video_frames(WINDOW, 0.9),
        min_audio_frames(WINDOW, 0.9),
        true,
    );
    assert!(
        first.is_running(),
        "the first publisher's ffmpeg exited: {}",
        first.log()
    );
    let streams = server.streams();
    let same: Vec<_> = streams
        .iter()
        .filter(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
        .collect();
    assert_eq!(same.len(), 1, "expected one stream {name}: {streams:?}");
    assert_eq!(
        same[0].get("source").and_then(|s| s.as_str()),
        Some("rtmp"),
        "stream entry: {:?}",
        same[0]
    );

    // Shutdown with a publisher and a rejected client still connected.
    drop(second);
    server.shutdown_checked();
    wait_for(
        Duration::from_secs(5),
        "the publisher to notice the server closed its connection",
        || !first.is_running(),
    );
}
