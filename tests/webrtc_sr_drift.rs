//! RTCP sender reports refine audio against video (src/relay/srsync.rs), proven with a
//! peer we did not write: aiortc publishes over WHIP with a "sound card" whose clock runs
//! 0.5% fast (tests/py/whip_publish.py AUDIO_DRIFT_PPM): its 48 kHz frames come 0.5% more
//! often than the wall clock says, so by RTP timestamps (sample counts) alone the audio
//! would move 5 ms a second later against the video. aiortc's sender reports pair each
//! track's RTP timestamps with its wall clock, which says so.
//!
//! What must hold, in the RTMP output recorded by ffmpeg and in `/api/streams`:
//! - AAC frame timestamps advance at the wall clock, not at the sample count: 1024
//!   samples take 21.333 ms / 1.005 = 21.227 ms (by samples alone: 21.333), over the
//!   last 8 s of the recording;
//! - audio timestamps never step backwards (the correction is slewed in);
//! - `av_sr_shift_ms` has followed the drift (about -5 ms a second since the first report);
//! - video timestamps are untouched (30 fps from aiortc's wall-clock pacing).
//!
//! The drift is exaggerated (a real sound card is within ~100 ppm: 6 ms a minute) so that a
//! 20 s run shows it clearly. Runs in a loopback-only network namespace. About 25 s.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{netns, scratch_path, tool, wait_child, ChildGuard, Server};

const NAME: &str = "drift1";
const DRIFT_PPM: f64 = 5000.0;
const PUBLISH_SECS: u32 = 20;
const RECORD_SECS: u32 = 14;
/// Seconds at the end of the recording the AAC timestamp rate is fitted over.
const FIT_SECS: f64 = 8.0;

/// (pts in ms) of every packet of one stream kind ("audio"/"video") in `file`.
fn packet_times(file: &std::path::Path, kind: &str) -> Vec<f64> {
    let sel = if kind == "audio" { "a" } else { "v" };
    let out = Command::new(tool("ffprobe"))
        .args(["-v", "error", "-select_streams", sel, "-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok()).map(|s| s * 1000.0).collect()
}

/// Least-squares slope of `ys` against their index.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        sxy += dx * (y - my);
        sxx += dx * dx;
    }
    sxy / sxx
}

#[test]
fn audio_clock_drift_is_corrected_by_sender_reports() {
    if netns::reexec("audio_clock_drift_is_corrected_by_sender_reports") {
        return;
    }
    let t0 = Instant::now();
    let server = Server::start(&["--workers", "1"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("py").join("whip_publish.py");
    let url = format!("http://127.0.0.1:{}/whip/{NAME}", server.http_port);
    let pub_log = scratch_path("sr-drift-aiortc", "log");
    let out_file = std::fs::File::create(&pub_log).expect("publisher log");
    let err_file = out_file.try_clone().expect("publisher log");
    let publisher = Command::new(tool("python3"))
        .arg(&script)
        .arg(&url)
        .arg(PUBLISH_SECS.to_string())
        .arg("opus")
        .arg(DRIFT_PPM.to_string())
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .expect("run aiortc (pip install aiortc: tools/test-all)");
    let mut publisher = ChildGuard::new("aiortc publisher", publisher);
    common::wait_for(Duration::from_secs(15), "the stream is live with AAC audio", || {
        server.stream(NAME).is_some_and(|s| s["audio"]["frames"].as_u64().unwrap_or(0) > 25 && s["video"]["frames"].as_u64().unwrap_or(0) > 15)
    });
    let flv = scratch_path("sr-drift", "flv");
    let rec = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i", &server.rtmp_url(NAME), "-t", &RECORD_SECS.to_string(), "-c", "copy"])
        .arg(&flv)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg recorder");
    let mut rec = ChildGuard::new("ffmpeg recorder", rec);
    // The latest numbers while publishing (the stream is gone after aiortc's DELETE).
    let mut last = None;
    let until = Instant::now() + Duration::from_secs(u64::from(PUBLISH_SECS) + 10);
    while Instant::now() < until {
        match server.stream(NAME) {
            Some(s) => last = Some((s, t0.elapsed().as_secs_f64())),
            None if last.is_some() => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = wait_child(&mut rec.child, Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "the RTMP recorder failed ({status:?})\n{}", common::tail(&server.log(), 30));
    let pub_status = wait_child(&mut publisher.child, Duration::from_secs(15));
    assert!(
        pub_status.is_some_and(|s| s.success()),
        "aiortc publish failed ({pub_status:?}): {}\n{}",
        common::read_file_lossy(&pub_log),
        common::tail(&server.log(), 30)
    );

    let (s, _) = last.expect("the stream was seen in /api/streams");
    let shift = s["webrtc"]["av_sr_shift_ms"].as_i64().unwrap_or_else(|| panic!("av_sr_shift_ms: {s}"));
    let skew = s["webrtc"]["av_sr_skew_ms"].as_i64().unwrap_or_else(|| panic!("av_sr_skew_ms: {s}"));
    let audio_frames = s["audio"]["frames"].as_u64().unwrap_or(0);
    // ~19 s of drift at 5 ms/s after the first report pair (~1 s in); the dead band and
    // the report interval may hold back a few ms.
    let expect_shift = -(DRIFT_PPM * 1e-6) * f64::from(PUBLISH_SECS - 1) * 1000.0;
    eprintln!("/api/streams at the end: av_sr_shift_ms {shift} (drift alone: about {expect_shift:.0}), av_sr_skew_ms {skew}, {audio_frames} Opus frames");
    assert!(
        (shift as f64) < 0.6 * expect_shift && (shift as f64) > 1.4 * expect_shift,
        "the sender reports' drift was not followed: av_sr_shift_ms {shift}, expected about {expect_shift:.0}: {s}"
    );

    let audio = packet_times(&flv, "audio");
    let video = packet_times(&flv, "video");
    assert!(audio.len() > 400 && video.len() > 300, "{} audio and {} video packets in {RECORD_SECS} s of {}", audio.len(), video.len(), flv.display());
    let back: Vec<(usize, f64, f64)> = audio.windows(2).enumerate().filter(|(_, w)| w[1] <= w[0]).map(|(i, w)| (i, w[0], w[1])).collect();
    assert!(back.is_empty(), "audio timestamps stepped back or repeated: {:?}", &back[..back.len().min(10)]);
    let end = audio.last().copied().unwrap_or(0.0);
    let tail: Vec<f64> = audio.iter().copied().filter(|t| *t >= end - FIT_SECS * 1000.0).collect();
    let a_ms = slope(&tail);
    let vend = video.last().copied().unwrap_or(0.0);
    let vtail: Vec<f64> = video.iter().copied().filter(|t| *t >= vend - FIT_SECS * 1000.0).collect();
    let v_ms = slope(&vtail);
    let by_samples = 1024.0 * 1000.0 / 48_000.0;
    let by_wall = by_samples / (1.0 + DRIFT_PPM * 1e-6);
    eprintln!(
        "RTMP output, last {FIT_SECS} s: {:.4} ms per AAC frame ({} frames; by the wall clock {by_wall:.4}, by sample count alone {by_samples:.4}); \
         {:.3} ms per video frame ({} frames); test ran {:.1} s",
        a_ms,
        tail.len(),
        v_ms,
        vtail.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        (a_ms - by_wall).abs() < 0.3 * (by_samples - by_wall),
        "AAC timestamps advance {a_ms:.4} ms per frame: the wall clock says {by_wall:.4}, the sample count alone {by_samples:.4}"
    );
    assert!((v_ms - 1000.0 / 30.0).abs() < 0.2, "video timestamps advance {v_ms:.3} ms per frame, aiortc sends 30 fps");
}
