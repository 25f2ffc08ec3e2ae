//! A player that reads at a tenth of the stream rate is dropped to (or
//! evicted) without slowing down a fast player or growing the server's memory.
mod common;

use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PHASE1: Duration = Duration::from_secs(10);
/// Phase-1 lag samples count from here (start-up and the first burst are over).
const WARMUP: Duration = Duration::from_secs(5);
const PHASE2: Duration = Duration::from_secs(15);
/// Phase 2 goes on past PHASE2 (at most this long) until drops or an eviction show.
const PHASE2_MAX: Duration = Duration::from_secs(30);
const SLOW_BYTES_PER_SEC: f64 = 2_500_000.0 / 8.0 / 10.0;

fn tail_chars(s: &str, n: usize) -> String {
    let cut = s.char_indices().rev().nth(n).map(|(i, _)| i).unwrap_or(0);
    s[cut..].replace('\r', "\n")
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

#[test]
fn slow_player_is_dropped_to_not_waited_for() {
    let server = Server::start(&["--player-queue-kb", "512"]);
    let name = "slowpoke";
    let url = server.rtmp_url(name);
    let mut publisher = Publisher::ffmpeg(&url, 2500);
    server.wait_stream_live(name, Duration::from_secs(15));

    // Phase 1: the reference player alone.
    let reference = LivePlayer::start("reference player", &url, 60.0);
    let t_ref = reference.started;
    let mut lag1 = Vec::new();
    while t_ref.elapsed() < PHASE1 {
        if t_ref.elapsed() >= WARMUP {
            if let Some(l) = reference.lag() {
                lag1.push(l);
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let frames1 = reference.video_frames();
    assert!(
        frames1 >= min_video_frames(PHASE1.as_secs_f64() - 2.0, 0.9),
        "reference player decoded only {frames1} video frames in its first {PHASE1:?}"
    );
    assert!(!lag1.is_empty(), "no lag samples for the reference player");
    let base_lag = max(&lag1);
    let rss_before = server.rss_kib();

    // Phase 2: add rtmpdump, read at ~31 KB/s.
    let (dump, dump_out, dump_err) = rtmpdump_to_pipe(&["-r", &url, "-v", "-R", "-m", "30"]);
    let stop = Arc::new(AtomicBool::new(false));
    let slow = slow_reader(dump_out, SLOW_BYTES_PER_SEC, stop.clone());
    let t_slow = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "the slow player to be counted",
        || server.metrics().sum("rtcbridge_players") >= 2.0,
    );
    let mut lag2 = Vec::new();
    let mut pressure = None;
    let mut last_check = Instant::now() - Duration::from_secs(1);
    loop {
        if let Some(l) = reference.lag() {
            lag2.push(l);
        }
        if pressure.is_none() && last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            let m = server.metrics();
            if m.sum("rtcbridge_drops_total") > 0.0 || m.sum("rtcbridge_evictions_total") > 0.0 {
                pressure = Some((t_slow.elapsed(), m));
            }
        }
        let el = t_slow.elapsed();
        if (el >= PHASE2 && pressure.is_some()) || el >= PHASE2_MAX {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let phase2 = t_slow.elapsed();
    let frames2 = reference.video_frames() - frames1;
    let rss_after = server.rss_kib();
    let m = server.metrics();
    stop.store(true, Ordering::SeqCst);
    drop(dump);
    let slow_bytes = slow.join().unwrap_or(0);
    let result = reference.finish();

    let drops = |r: &str| m.sum_where("rtcbridge_drops_total", &[("reason", r)]);
    let breakdown = format!(
        "drops inter {} keyframe {} audio {}, evictions {}, slow reader took {slow_bytes} bytes in {phase2:?}",
        drops("inter"),
        drops("keyframe"),
        drops("audio"),
        m.sum("rtcbridge_evictions_total")
    );
    let (when, _) = pressure.unwrap_or_else(|| {
        panic!(
            "no drops and no eviction {PHASE2_MAX:?} after a player started reading a 2.5 Mb/s stream \
             at {SLOW_BYTES_PER_SEC} B/s with --player-queue-kb 512 ({breakdown}). Note: kernel \
             socket buffers on loopback can absorb ~4 MB; the server must bound them (SO_SNDBUF) \
             for its queue limit to bite. rtmpdump log:\n{}\nmetrics:\n{}",
            tail_chars(&read_file_lossy(&dump_err), 800),
            m.text
        )
    });
    eprintln!("slow player: pressure seen after {when:?}; {breakdown}");

    let max2 = max(&lag2);
    eprintln!("reference lag: max {base_lag:.3} s alone, {max2:.3} s with the slow player");
    assert!(
        max2 <= base_lag + 0.5,
        "reference player's lag grew with a slow player present: max {max2:.3} s vs {base_lag:.3} s before ({breakdown})"
    );
    assert!(
        frames2 >= min_video_frames(phase2.as_secs_f64(), 0.9),
        "reference player got {frames2} video frames in {phase2:?} with the slow player present"
    );
    let growth_kib = rss_after.saturating_sub(rss_before);
    assert!(
        growth_kib <= 48 * 1024,
        "server VmRSS grew {growth_kib} KiB ({rss_before} -> {rss_after}) with one slow player"
    );
    // Everything the reference decoded is clean (it was stopped, so no exit check).
    let secs = result.wall.as_secs_f64() - 2.0;
    result.assert_healthy(
        min_video_frames(secs, 0.9),
        min_audio_frames(secs, 0.9),
        false,
    );
    assert!(
        publisher.is_running(),
        "publisher died: {}",
        publisher.log()
    );
}
