//! WebRTC playback through our own demo page (GET / of the server, src/web/index.html, its
//! "Play over WebRTC" panel), unchanged, in headless Chromium (tests/js/play_demo.mjs); the
//! source is ffmpeg publishing testsrc2 640x360 at 30 fps (H.264 without B-frames) and a
//! 440 Hz tone (AAC) over RTMP.
//!
//! One browser run: Connect (#connectStatus ESTABLISHED); Play the published name: #playStatus
//! PLAYING, and over 8 s the page's receiving RTCPeerConnection (getStats() inbound-rtp)
//! decodes at least 80 % of 30 fps of H.264 640x360 video, and receives audio that is not
//! silence (totalAudioEnergy; the server's AAC → Opus); /api/streams counts one WebRTC viewer
//! meanwhile. Stop (#playBtn again): STOPPED, and the viewer is gone from /api/streams. Then
//! Play of a name nobody publishes: FAILED with #playInfo "Stream not found".
//!
//! Runs in a loopback-only network namespace (TESTING.md); the browser is ended by its
//! guard and the driver's own hard deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/play.rs"]
mod play;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{netns, tail, tool, Publisher, Server};
use play::{serial, webrtc_viewers};
use serde_json::Value;

const MEASURE_SECS: u32 = 8;
const SOURCE_FPS: f64 = 30.0;
const MIN_RATIO: f64 = 0.8;
/// Mean totalAudioEnergy per second above which the audio is not silence (ffmpeg's sine at
/// 1/8 of full scale gives about 0.008 per second).
const MIN_ENERGY_PER_SEC: f64 = 1e-3;
/// The driver's own hard deadline, and ours a little later.
const DRIVER_DEADLINE_SECS: u64 = 45;
const RUN_TIMEOUT: Duration = Duration::from_secs(DRIVER_DEADLINE_SECS + 10);

/// Everything play_demo.mjs printed.
struct DemoRun {
    lines: Vec<Value>,
    raw: String,
}

impl DemoRun {
    /// Successive texts of a status element.
    fn statuses(&self, el: &str) -> Vec<String> {
        self.lines.iter().filter(|l| l["el"] == el).filter_map(|l| l["text"].as_str().map(String::from)).collect()
    }
    fn aborted(&self) -> Option<(String, String)> {
        self.lines.iter().find(|l| l.get("abort").is_some()).map(|l| (l["abort"].as_str().unwrap_or("").to_string(), l["why"].as_str().unwrap_or("").to_string()))
    }
    /// getStats() samples of the measure step: (seconds since start, sample).
    fn measured(&self) -> Vec<(f64, Value)> {
        let mut inside = false;
        let mut v = Vec::new();
        for l in &self.lines {
            if let Some(a) = l["action"].as_str() {
                inside = a.starts_with("measure");
            } else if inside && l.get("stats").is_some() && l.get("final").is_none() {
                v.push((l["t"].as_f64().unwrap_or(0.0) / 1000.0, l["stats"].clone()));
            }
        }
        v
    }
    fn brief(&self) -> String {
        self.raw.lines().filter(|l| !l.contains("\"console\"")).map(|l| l.char_indices().nth(500).map_or(l, |(i, _)| &l[..i])).collect::<Vec<_>>().join("\n")
    }
}

/// Runs `node tests/js/play_demo.mjs --http URL --steps ...` with a deadline; `during` sees
/// every output line as it comes.
fn run_demo(http_port: u16, steps: &[&str], during: impl FnMut(&Value)) -> DemoRun {
    let node = tool("node");
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("js");
    assert!(js.join("play_demo.mjs").is_file(), "tests/js/play_demo.mjs missing");
    assert!(js.join("node_modules").join("playwright-core").is_dir(), "tests/js/node_modules/playwright-core missing: run tools/test-all (npm install in tests/js)");
    assert!(PathBuf::from("/usr/bin/chromium").is_file(), "/usr/bin/chromium not found: run tools/test-all (apt-get install chromium)");
    let url = format!("http://127.0.0.1:{http_port}/");
    let steps = steps.join(",");
    let mut cmd = Command::new(node);
    cmd.current_dir(&js).args(["play_demo.mjs", "--http", &url, "--steps", &steps, "--deadline", &DRIVER_DEADLINE_SECS.to_string()]);
    let (lines, raw) = play::run_json_lines("node play_demo.mjs", &steps, cmd, RUN_TIMEOUT, during);
    let run = DemoRun { lines, raw };
    assert!(run.lines.iter().any(|l| l["done"] == true), "play_demo.mjs ended without its \"done\" line (crashed?):\n{}", run.raw);
    if let Some((step, why)) = run.aborted().filter(|(s, _)| s == "driver" || s == "deadline") {
        panic!("play_demo.mjs itself failed ({step}): {why}\n{}", run.brief());
    }
    run
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64().unwrap_or(0.0)
}

#[test]
fn demo_page_plays_an_rtmp_stream_over_webrtc() {
    let _one = serial();
    if netns::reexec("demo_page_plays_an_rtmp_stream_over_webrtc") {
        return;
    }
    let started = Instant::now();
    let name = "demoplay1";
    let nobody = "demoplay-nobody";
    let server = Server::start(&[]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(name), 1000);
    server.wait_stream_live(name, Duration::from_secs(10));

    let measure = format!("measure:{MEASURE_SECS}");
    let play = format!("play:{name}");
    let play_nobody = format!("play:{nobody}:FAILED");
    let mut viewers_while_playing: Vec<Option<u64>> = Vec::new();
    let mut viewers_after_stop: Option<Option<u64>> = None;
    let run = run_demo(server.http_port, &["connect", &play, &measure, "stop-play", &play_nobody], |line| {
        if line.get("stats").is_some_and(|s| num(s, &["video", "framesDecoded"]) > 0.0) && viewers_while_playing.len() < 3 {
            viewers_while_playing.push(webrtc_viewers(&server, name));
        }
        if line["el"] == "#playStatus" && line["text"] == "STOPPED" {
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut v = webrtc_viewers(&server, name);
            while v != Some(0) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
                v = webrtc_viewers(&server, name);
            }
            viewers_after_stop = Some(v);
        }
    });
    let ctx = format!("driver output:\n{}\nserver log tail:\n{}\npublisher log:\n{}", run.brief(), tail(&server.log(), 30), tail(&publisher.log(), 10));

    assert_eq!(run.statuses("#connectStatus").last().map(String::as_str), Some("ESTABLISHED"), "Connect on the demo page; {ctx}");
    let plays = run.statuses("#playStatus");
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; play statuses {plays:?}; {ctx}", run.aborted());
    let seq: Vec<&str> = plays.iter().map(String::as_str).filter(|s| *s != "PENDING").collect();
    assert_eq!(seq, ["NEW", "PLAYING", "STOPPED", "FAILED"], "#playStatus: PLAYING, STOPPED after Stop, FAILED for {nobody}; {ctx}");
    let info = run.statuses("#playInfo");
    assert_eq!(info.last().map(String::as_str), Some("Stream not found"), "#playInfo after Play of {nobody}: {info:?}; {ctx}");
    assert_eq!(run.statuses("#playBtn").last().map(String::as_str), Some("Play"), "#playBtn back to Play after FAILED; {ctx}");

    // The receiving peer connection's getStats() over the measure window (first to last sample).
    let samples = run.measured();
    assert!(samples.len() >= MEASURE_SECS as usize, "{} getStats() samples while playing, want {}; {ctx}", samples.len(), MEASURE_SECS + 1);
    let ((ta, a), (tb, b)) = (samples.first().cloned().unwrap(), samples.last().cloned().unwrap());
    let secs = tb - ta;
    let frames = num(&b, &["video", "framesDecoded"]) - num(&a, &["video", "framesDecoded"]);
    let energy = num(&b, &["audio", "totalAudioEnergy"]) - num(&a, &["audio", "totalAudioEnergy"]);
    let audio_samples = num(&b, &["audio", "totalSamplesReceived"]) - num(&a, &["audio", "totalSamplesReceived"]);
    let concealed = num(&b, &["audio", "concealedSamples"]) - num(&a, &["audio", "concealedSamples"]);
    eprintln!(
        "demo page over {secs:.1} s: {frames} video frames decoded ({:.1} fps), audio energy {energy:.4} ({:.5}/s), {audio_samples} samples, {concealed} concealed\nfirst {a}\nlast {b}",
        frames / secs,
        energy / secs
    );
    let want = MIN_RATIO * SOURCE_FPS * secs;
    assert!(frames >= want, "the demo page decoded {frames} frames in {secs:.1} s, want >= {want:.0} (80 % of 30 fps); {ctx}");
    assert!(b["video"]["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case("video/H264")), "H.264 video: {b}");
    assert_eq!((num(&b, &["video", "frameWidth"]), num(&b, &["video", "frameHeight"])), (640.0, 360.0), "the source's picture size: {b}");
    assert!(b["audio"]["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case("audio/opus")), "Opus audio: {b}");
    assert!(audio_samples >= MIN_RATIO * 48000.0 * secs, "audio samples received in {secs:.1} s: {audio_samples}; {b}");
    assert!(energy / secs > MIN_ENERGY_PER_SEC, "the audio is not silence: energy {energy} over {secs:.1} s; {b}");
    assert!(b["element"]["hasSrc"] == true && b["element"]["width"] == 640, "#remoteVideo shows the stream: {b}");

    // What the server said.
    assert!(viewers_while_playing.contains(&Some(1)), "/api/streams webrtc_viewers while the page played: {viewers_while_playing:?}");
    assert_eq!(viewers_after_stop, Some(Some(0)), "/api/streams webrtc_viewers after Stop");
    assert!(server.stream(nobody).is_none(), "no stream made up for {nobody}");
    assert!(publisher.is_running(), "the ffmpeg publisher died: {}", publisher.log());
    eprintln!("demo page test took {:.1} s", started.elapsed().as_secs_f64());
}
