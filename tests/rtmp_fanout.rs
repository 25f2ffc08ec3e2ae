//! One ffmpeg publisher, many ffmpeg players spread over two workers; a
//! mid-stream joiner starts at a keyframe right away (no wait for the next GOP).
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const WINDOW: f64 = 8.0;

#[test]
fn fanout_over_two_workers() {
    let mut server = Server::start(&["--workers", "2"]);
    let name = "fanout";
    let url = server.rtmp_url(name);
    let mut publisher = Publisher::ffmpeg(&url, 2500);
    server.wait_stream_live(name, Duration::from_secs(15));

    // --- A mid-stream joiner gets a keyframe at once --------------------------
    // Watch the stream with a raw client and find a keyframe that arrives
    // live (not in the start-up burst of a cached GOP: 500 ms after the first
    // video). 300 ms after it the next one is ~1.7 s away (GOP 2 s), so a
    // joiner whose first video frame is a keyframe within 800 ms was served
    // from a cached GOP rather than made to wait for the next one.
    let mut watcher = RtmpClient::connect(server.rtmp_port);
    watcher.start_play(name);
    let (_, first_video) = watcher
        .wait_event(0, Duration::from_secs(6), |e| {
            matches!(e.video_kind(), Some((_, false)))
        })
        .unwrap_or_else(|| panic!("watcher saw no video in 6 s: {}", watcher.describe()));
    let live_after = first_video.at + Duration::from_millis(500);
    let (_, kf) = watcher
        .wait_event(0, Duration::from_secs(6), |e| {
            matches!(e.video_kind(), Some((true, false))) && e.at >= live_after
        })
        .unwrap_or_else(|| {
            panic!(
                "watcher saw no live keyframe in 6 s: {}",
                watcher.describe()
            )
        });
    sleep_until(kf.at + Duration::from_millis(300));
    let probe = thread::spawn({
        let url = url.clone();
        move || {
            Command::new(tool("ffprobe"))
                .args([
                    "-v",
                    "error",
                    "-rw_timeout",
                    "5000000",
                    "-select_streams",
                    "v",
                ])
                .args([
                    "-show_entries",
                    "packet=pts_time,flags:frame=key_frame,pts_time",
                ])
                .args(["-read_intervals", "%+3", "-of", "csv", &url])
                .stdin(Stdio::null())
                .output()
        }
    });
    let mut joiner = RtmpClient::connect(server.rtmp_port);
    let play_sent = joiner.start_play(name);
    let (_, first) = joiner
        .wait_event(0, Duration::from_secs(5), |e| {
            matches!(e.video_kind(), Some((_, false)))
        })
        .unwrap_or_else(|| panic!("joiner got no video frame in 5 s: {}", joiner.describe()));
    let (is_key, _) = first.video_kind().unwrap();
    let delay = first.at.duration_since(play_sent);
    assert!(
        is_key,
        "joiner's first video frame is not a keyframe: {}",
        joiner.describe()
    );
    assert!(
        delay < Duration::from_millis(800),
        "joiner's first video frame came {delay:?} after play (joined 300 ms after a keyframe, \
         so this looks like waiting for the next GOP instead of sending the cached one)"
    );
    drop(joiner);
    drop(watcher);

    // --- Staggered players over two workers -----------------------------------
    let mut players: Vec<FramePlayer> = Vec::new();
    let mut seen = [false, false];
    let mut max_players = 0.0f64;
    let poll = |seen: &mut [bool; 2], max_players: &mut f64| {
        let m = server.metrics();
        for (w, s) in seen.iter_mut().enumerate() {
            if m.worker("rtcbridge_players", w) > 0.0 {
                *s = true;
            }
        }
        *max_players = max_players.max(m.sum("rtcbridge_players"));
    };
    let t0 = Instant::now();
    let mut next_start = t0;
    loop {
        let n = players.len();
        let both = seen[0] && seen[1];
        if n >= 20 || (n >= 6 && both) {
            break;
        }
        if Instant::now() >= next_start {
            players.push(FramePlayer::start(&format!("player{n}"), &url, WINDOW));
            // Every 1.5 s for the first six; faster for extras (SO_REUSEPORT may
            // have put all of them on one worker).
            next_start = Instant::now()
                + if n < 5 {
                    Duration::from_millis(1500)
                } else {
                    Duration::from_millis(500)
                };
        }
        poll(&mut seen, &mut max_players);
        thread::sleep(Duration::from_millis(100));
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "player start-up loop overran"
        );
    }
    // Keep polling while they play.
    while players.iter_mut().any(|p| p.is_running()) && t0.elapsed() < Duration::from_secs(60) {
        poll(&mut seen, &mut max_players);
        thread::sleep(Duration::from_millis(200));
    }
    let n_players = players.len();
    assert!(
        seen[0] && seen[1],
        "rtcbridge_players never > 0 on both workers with {n_players} players (seen {seen:?}); metrics:\n{}",
        server.metrics().text
    );
    assert!(
        max_players >= 2.0,
        "rtcbridge_players peaked at {max_players} with {n_players} staggered players"
    );

    for p in players {
        let r = p.finish(Duration::from_secs(20));
        r.assert_healthy(
            min_video_frames(WINDOW, 0.9),
            min_audio_frames(WINDOW, 0.9),
            true,
        );
    }

    // The joiner's view from a real client: first video packet is a keyframe.
    let out = probe.join().unwrap().expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().is_empty(), "ffprobe errors: {err}");
    let first_packet = text
        .lines()
        .find(|l| l.starts_with("packet,"))
        .unwrap_or_else(|| panic!("ffprobe saw no video packet: {text}"));
    assert!(
        first_packet.ends_with(",K_") || first_packet.ends_with(",K"),
        "ffprobe's first video packet is not a keyframe: {first_packet}"
    );
    let first_frame = text
        .lines()
        .find(|l| l.starts_with("frame,"))
        .unwrap_or_else(|| panic!("ffprobe decoded no video frame: {text}"));
    assert!(
        first_frame.starts_with("frame,1,"),
        "ffprobe's first decoded frame is not a keyframe: {first_frame}"
    );

    // Players leave; the publisher stays.
    wait_for(
        Duration::from_secs(5),
        "rtcbridge_players to return to 0",
        || server.metrics().sum("rtcbridge_players") == 0.0,
    );
    let m = server.metrics();
    assert_eq!(
        m.sum("rtcbridge_publishers"),
        1.0,
        "publishers gauge: {}",
        m.text
    );
    assert_eq!(m.sum("rtcbridge_streams"), 1.0, "streams gauge: {}", m.text);
    assert!(
        m.sum("rtcbridge_bytes_out_total") > m.sum("rtcbridge_bytes_in_total"),
        "fan-out should send more than it receives: {}",
        m.text
    );

    // Shutdown with the publisher still connected: exit 0 within 2 s and its
    // connection is closed (ffmpeg notices and exits).
    assert!(
        publisher.is_running(),
        "publisher died: {}",
        publisher.log()
    );
    server.shutdown_checked();
    wait_for(
        Duration::from_secs(5),
        "the publisher to notice the server closed its connection",
        || !publisher.is_running(),
    );
}
