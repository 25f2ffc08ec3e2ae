//! `--write-batch-ms`: media for players is held and written in batches, so a
//! player receives its messages in bursts at most every MS ms, yet joins are
//! not held (the cached GOP goes out at once) and ffmpeg still decodes every
//! frame. The same measurement without the flag shows the difference, so the
//! burst count cannot pass by accident.
mod common;

use common::*;
use std::time::{Duration, Instant};

const BATCH_MS: u64 = 100;
/// Arrivals closer than this belong to one burst (one writev on the server).
const BURST_GAP: Duration = Duration::from_millis(8);
const WATCH: Duration = Duration::from_secs(4);

/// Bursts of media messages per second seen by a raw player over `WATCH`, and the
/// time from play to its first keyframe.
fn watch(server: &Server, name: &str) -> (f64, Duration) {
    let mut c = RtmpClient::connect(server.rtmp_port);
    let play_sent = c.start_play(name);
    let (from, first) = c
        .wait_event(0, Duration::from_secs(5), |e| matches!(e.video_kind(), Some((_, false))))
        .unwrap_or_else(|| panic!("no video in 5 s: {}", c.describe()));
    let (is_key, _) = first.video_kind().unwrap_or((false, false));
    assert!(is_key, "first video frame is not a keyframe: {}", c.describe());
    let join = first.at.duration_since(play_sent);
    // Skip the join burst, then count bursts over the window.
    std::thread::sleep(Duration::from_millis(500) + WATCH);
    let start = first.at + Duration::from_millis(500);
    let end = start + WATCH;
    let times: Vec<Instant> = c
        .events()
        .into_iter()
        .skip(from)
        .filter(|r| (r.is_media(MSG_VIDEO) || r.is_media(MSG_AUDIO)) && r.at >= start && r.at < end)
        .map(|r| r.at)
        .collect();
    assert!(times.len() > 100, "too few media messages in {WATCH:?}: {}", times.len());
    let bursts = 1 + times.windows(2).filter(|w| w[1].duration_since(w[0]) > BURST_GAP).count();
    (bursts as f64 / WATCH.as_secs_f64(), join)
}

#[test]
fn held_writes_come_in_batches_and_joins_are_not_held() {
    let batch = BATCH_MS.to_string();
    let mut server = Server::start(&["--workers", "1", "--write-batch-ms", &batch]);
    let name = "batched";
    let url = server.rtmp_url(name);
    let mut publisher = Publisher::ffmpeg(&url, 2500);
    server.wait_stream_live(name, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));

    let player = FramePlayer::start("batched-player", &url, 6.0);
    let (rate, join) = watch(&server, name);
    eprintln!("--write-batch-ms {BATCH_MS}: {rate:.1} bursts/s, join to first keyframe {join:?}");
    // One burst per tick (plus the odd immediate write of a message over 64 KiB).
    let max_rate = 1000.0 / BATCH_MS as f64 * 1.6 + 1.0;
    assert!(rate <= max_rate, "{rate:.1} bursts/s with --write-batch-ms {BATCH_MS} (at most {max_rate:.1} expected)");
    assert!(join < Duration::from_millis(100), "join to first keyframe took {join:?}: the cached GOP must not be held");
    player.finish(Duration::from_secs(20)).assert_healthy(min_video_frames(6.0, 0.9), min_audio_frames(6.0, 0.9), true);
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
    server.shutdown_checked();
    drop(publisher);

    // Without the flag: a write per loop turn, many more bursts.
    let mut server = Server::start(&["--workers", "1"]);
    let url = server.rtmp_url(name);
    let mut publisher = Publisher::ffmpeg(&url, 2500);
    server.wait_stream_live(name, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500));
    let (unbatched, _) = watch(&server, name);
    eprintln!("no batching: {unbatched:.1} bursts/s");
    assert!(unbatched > 2.0 * rate, "without --write-batch-ms {unbatched:.1} bursts/s, with it {rate:.1}: batching made no difference");
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
    server.shutdown_checked();
}
