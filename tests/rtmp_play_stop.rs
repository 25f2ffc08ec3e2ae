//! Flash semantics the Flashphoner "Flash Streaming" client relies on: a player that
//! calls `closeStream` (Flash's `NetStream.close()`) or `deleteStream` on a playing
//! stream gets `NetStream.Play.Stop` ("Stopped playing NAME.") before the stream is
//! torn down, then no more media; the connection stays usable and plays again.
mod common;

use common::*;
use std::time::{Duration, Instant};

/// connect + createStream + play; waits for video. Returns the message stream id.
fn play_until_video(c: &mut RtmpClient, name: &str) -> u32 {
    let sid = c.create_stream();
    let from = c.len();
    c.play(sid, name);
    c.wait_event(from, Duration::from_secs(10), |e| matches!(e.video_kind(), Some((_, false))))
        .unwrap_or_else(|| panic!("no video: {}", c.describe()));
    sid
}

/// Sends `stop`, then expects Play.Stop with the right description and no media after it.
fn assert_stops(c: &mut RtmpClient, name: &str, stop: impl FnOnce(&mut RtmpClient)) {
    let from = c.len();
    stop(c);
    let (i, rec) = c.wait_status(from, "NetStream.Play.Stop", Duration::from_secs(5));
    let Event::Status { info, .. } = &rec.event else { unreachable!() };
    let desc = info.get("description").and_then(Amf::as_str).unwrap_or_default().to_owned();
    assert_eq!(desc, format!("Stopped playing {name}."), "{}", c.describe());
    // Media already in flight may arrive just after; then nothing for a while.
    std::thread::sleep(Duration::from_millis(300));
    let settled = c.len();
    std::thread::sleep(Duration::from_millis(700));
    let late: Vec<_> = c.events()[settled..]
        .iter()
        .filter(|e| e.is_media(MSG_VIDEO) || e.is_media(MSG_AUDIO))
        .map(|e| e.at)
        .collect();
    assert!(late.is_empty(), "{} media messages >300 ms after Play.Stop (status at #{i})", late.len());
    assert!(!c.closed(), "the connection stays open: {}", c.describe());
}

#[test]
fn close_stream_and_delete_stream_get_play_stop() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url("cam"), 600);
    server.wait_stream_live("cam", Duration::from_secs(10));
    let t0 = Instant::now();

    let mut c = RtmpClient::connect(server.rtmp_port);
    c.connect_app("live");
    let sid = play_until_video(&mut c, "cam");
    assert_stops(&mut c, "cam", |c| {
        c.send_command(sid, false, &[Amf::str("closeStream"), Amf::Number(0.0), Amf::Null]);
    });

    // The same connection plays again (the Flash client's Play button), then deleteStream.
    let sid = play_until_video(&mut c, "cam");
    assert_stops(&mut c, "cam", |c| {
        c.send_command(0, false, &[Amf::str("deleteStream"), Amf::Number(0.0), Amf::Null, Amf::Number(f64::from(sid))]);
    });

    // The server counts no players left, and the publisher was never disturbed.
    wait_for(Duration::from_secs(5), "players gauge back to 0", || server.metrics().sum("rtcbridge_players") == 0.0);
    assert!(publisher.is_running(), "publisher still up after {:?}: {}", t0.elapsed(), publisher.log());
}
