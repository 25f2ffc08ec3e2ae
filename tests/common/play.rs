//! Helpers for the WebRTC playback tests (tests/webrtc_play_sdk.rs, webrtc_play_rtmp.rs,
//! webrtc_play_whep.rs), included by them with `#[path = "common/play.rs"] mod play;`
//! next to `mod common;`:
//! - tests/js/play.mjs (headless Chromium on the Flashphoner Web SDK's own Two Way
//!   Streaming and Player pages), run with a deadline, its JSON lines kept and read back:
//!   status elements, the page's signaling messages, getStats() samples;
//! - a media window over those samples: frames decoded, frames the same page sent, audio
//!   energy and concealment;
//! - tests/py/whep_play.py (aiortc over WHEP), run with a deadline;
//! - ffmpeg publishing over RTMP with B-frames (the common `Publisher` has none);
//! - what /api/streams says about a stream's WebRTC viewers.
#![allow(dead_code)]

use crate::common::*;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Browser tests of one binary run one at a time (two Chromiums on two cores would measure
/// each other, not the server).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

// ---------------------------------------------------------------------------
// play.mjs
// ---------------------------------------------------------------------------

/// The SDK example page play.mjs drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// examples/demo/streaming/two_way_streaming: Connect, Publish, Play in one page.
    TwoWay,
    /// examples/demo/streaming/player: Start connects and plays.
    Player,
}

impl Page {
    fn arg(self) -> &'static str {
        match self {
            Page::TwoWay => "twoway",
            Page::Player => "player",
        }
    }
    /// The element that shows the play status.
    pub fn play_status(self) -> &'static str {
        match self {
            Page::TwoWay => "#playStatus",
            Page::Player => "#status",
        }
    }
    /// The element that shows the play failure's info (the two-way page words it its own way).
    pub fn play_info(self) -> &'static str {
        match self {
            Page::TwoWay => "#playInfo",
            Page::Player => "#info",
        }
    }
}

/// Everything play.mjs printed.
pub struct PageRun {
    pub page: Page,
    pub lines: Vec<Value>,
    pub raw: String,
}

impl PageRun {
    /// The texts element `el` showed, in order (empty texts left out).
    pub fn statuses(&self, el: &str) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l["el"] == el)
            .filter_map(|l| l["text"].as_str())
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect()
    }
    pub fn play_statuses(&self) -> Vec<String> {
        self.statuses(self.page.play_status())
    }
    pub fn last(&self, el: &str) -> Option<String> {
        self.statuses(el).pop()
    }
    /// (step, why) of the step that did not reach its condition, if one did not.
    pub fn aborted(&self) -> Option<(String, String)> {
        self.lines.iter().find(|l| l.get("abort").is_some()).map(|l| (l["abort"].as_str().unwrap_or("").to_string(), l["why"].as_str().unwrap_or("").to_string()))
    }
    /// Milliseconds since the driver started at which `el` first showed `text`.
    pub fn first_at(&self, el: &str, text: &str) -> Option<u64> {
        self.lines.iter().find(|l| l["el"] == el && l["text"] == text).and_then(|l| l["t"].as_u64())
    }
    /// Signaling messages the page sent ("out") or received ("in") named `message`: their
    /// first data element.
    pub fn ws(&self, dir: &str, message: &str) -> Vec<Value> {
        self.lines
            .iter()
            .filter_map(|l| l.get("ws"))
            .filter(|w| w["dir"] == dir && w["message"] == message)
            .map(|w| w["data"][0].clone())
            .collect()
    }
    /// The mediaSessionIds of the page's playStream messages.
    pub fn play_session_ids(&self) -> Vec<String> {
        self.ws("out", "playStream").iter().filter_map(|d| d["mediaSessionId"].as_str().map(String::from)).collect()
    }
    /// notifyStreamStatusEvent messages for the page's play streams, in order.
    pub fn play_events(&self) -> Vec<Value> {
        let ids = self.play_session_ids();
        self.ws("in", "notifyStreamStatusEvent").into_iter().filter(|d| d["mediaSessionId"].as_str().is_some_and(|id| ids.iter().any(|i| i == id))).collect()
    }
    /// (status, info) of every play stream event.
    pub fn play_event_summary(&self) -> Vec<(String, String)> {
        self.play_events().iter().map(|d| (d["status"].as_str().unwrap_or("").to_string(), d["info"].as_str().unwrap_or("").to_string())).collect()
    }
    /// getStats() samples: (seconds since the driver started, sample).
    pub fn stats(&self) -> Vec<(f64, Value)> {
        self.lines
            .iter()
            .filter_map(|l| Some((l["t"].as_f64()? / 1000.0, l.get("stats")?.clone())))
            .filter(|(_, s)| !s.is_null())
            .collect()
    }
    /// The driver's output without the page's console lines (for assertion messages).
    pub fn brief(&self) -> String {
        self.raw.lines().filter(|l| !l.contains("\"console\"")).map(|l| l.char_indices().nth(600).map_or(l, |(i, _)| &l[..i])).collect::<Vec<_>>().join("\n")
    }
}

/// Runs `node tests/js/play.mjs` on `page` against the server's WebSocket at `ws_port`,
/// `steps` in order (see play.mjs), `name` published and played unless `play_name` is
/// given. `during` sees every output line as it comes (it may block briefly: the browser
/// goes on meanwhile). Ends the driver and panics after `timeout`.
pub fn run_page(page: Page, ws_port: u16, name: &str, play_name: Option<&str>, steps: &[&str], timeout: Duration, during: impl FnMut(&Value)) -> PageRun {
    run_page_with(page, ws_port, name, play_name, &[], steps, timeout, during)
}

/// [`run_page`] with `extra` arguments for play.mjs (such as `--custom JSON`).
#[allow(clippy::too_many_arguments)]
pub fn run_page_with(page: Page, ws_port: u16, name: &str, play_name: Option<&str>, extra: &[&str], steps: &[&str], timeout: Duration, during: impl FnMut(&Value)) -> PageRun {
    let node = tool("node");
    let js = tests_dir().join("js");
    assert!(js.join("node_modules").join("playwright-core").is_dir(), "tests/js/node_modules/playwright-core missing: run tools/test-all (npm install in tests/js)");
    assert!(
        js.join("node_modules").join("@flashphoner").join("websdk").join("examples").is_dir(),
        "the Flashphoner Web SDK is missing from tests/js/node_modules: run tools/test-all (npm install in tests/js)"
    );
    assert!(PathBuf::from("/usr/bin/chromium").is_file(), "/usr/bin/chromium not found: run tools/test-all (apt-get install chromium)");
    let ws = format!("ws://127.0.0.1:{ws_port}/");
    let steps = steps.join(",");
    let mut cmd = Command::new(node);
    cmd.current_dir(&js).args(["play.mjs", "--page", page.arg(), "--ws", &ws, "--name", name, "--steps", &steps]);
    if let Some(p) = play_name {
        cmd.args(["--play-name", p]);
    }
    cmd.args(extra);
    let (lines, raw) = run_json_lines("play.mjs", &steps, cmd, timeout, during);
    let run = PageRun { page, lines, raw };
    assert!(run.lines.iter().any(|l| l["done"] == true), "play.mjs ended without its \"done\" line (crashed?):\n{}", run.raw);
    if let Some((step, why)) = run.aborted().filter(|(s, _)| s == "driver") {
        panic!("play.mjs itself failed ({step}): {why}\n{}", run.brief());
    }
    run
}

/// Runs a browser driver (`what`, running `steps`) that prints one JSON object per line:
/// every line read as it comes and given to `during`; the parsed lines and the raw output.
/// Ends the driver and panics after `timeout`.
pub fn run_json_lines(what: &str, steps: &str, mut cmd: Command, timeout: Duration, mut during: impl FnMut(&Value)) -> (Vec<Value>, String) {
    let mut child = ChildGuard::new(what, cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap_or_else(|e| panic!("start {what}: {e}")));
    let stdout = child.child.stdout.take().expect("driver stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut raw = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                raw.push_str(&line);
                raw.push('\n');
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    during(&v);
                    lines.push(v);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                drop(child);
                panic!("{what} ({steps}) ran past its {timeout:?} deadline; its output:\n{raw}");
            }
        }
    }
    let _ = reader.join();
    let _ = wait_child(&mut child.child, Duration::from_secs(10));
    (lines, raw)
}

/// What the page's peer connections did over a window of getStats() samples.
#[derive(Debug)]
pub struct MediaWindow {
    pub secs: f64,
    /// inbound-rtp video framesDecoded over the window.
    pub frames_decoded: f64,
    /// outbound-rtp video framesSent of the same page (its publisher), if it has one.
    pub frames_sent: Option<f64>,
    pub audio_energy: f64,
    pub samples_received: f64,
    pub concealed: f64,
    pub first: Value,
    pub last: Value,
}

impl MediaWindow {
    pub fn decoded_fps(&self) -> f64 {
        self.frames_decoded / self.secs
    }
    pub fn sent_fps(&self) -> Option<f64> {
        self.frames_sent.map(|f| f / self.secs)
    }
    /// Mean totalAudioEnergy per second (a steady tone of level L gives about L²).
    pub fn energy_per_sec(&self) -> f64 {
        self.audio_energy / self.secs
    }
    pub fn concealed_ratio(&self) -> f64 {
        if self.samples_received > 0.0 {
            self.concealed / self.samples_received
        } else {
            1.0
        }
    }
    pub fn describe(&self) -> String {
        format!(
            "window {:.1} s: video {} frames decoded ({:.1} fps), the page sent {} ({} fps); audio energy {:.4} ({:.5}/s), {} samples received, {} concealed ({:.1} %)\nfirst sample {}\nlast sample {}",
            self.secs,
            self.frames_decoded,
            self.decoded_fps(),
            self.frames_sent.map_or("-".into(), |f| f.to_string()),
            self.sent_fps().map_or("-".into(), |f| format!("{f:.1}")),
            self.audio_energy,
            self.energy_per_sec(),
            self.samples_received,
            self.concealed,
            self.concealed_ratio() * 100.0,
            self.first,
            self.last
        )
    }
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut x = v;
    for p in path {
        x = x.get(p)?;
    }
    x.as_f64()
}

/// The window over the page's samples that have a decoded video frame, leaving out the
/// first `warmup` seconds of them (decoder start, the first keyframe). None when fewer than
/// two samples remain.
pub fn media_window(run: &PageRun, warmup: f64) -> Option<MediaWindow> {
    let with: Vec<(f64, Value)> = run.stats().into_iter().filter(|(_, s)| num(s, &["video", "framesDecoded"]).is_some_and(|f| f > 0.0)).collect();
    let t_first = with.first()?.0;
    let kept: Vec<&(f64, Value)> = with.iter().filter(|(t, _)| *t >= t_first + warmup - 0.05).collect();
    let (ta, a) = kept.first()?;
    let (tb, b) = kept.last()?;
    let (ta, tb) = (*ta, *tb);
    if tb - ta < 1.0 {
        return None;
    }
    let d = |path: &[&str]| -> Option<f64> { Some(num(b, path)? - num(a, path)?) };
    Some(MediaWindow {
        secs: tb - ta,
        frames_decoded: d(&["video", "framesDecoded"]).unwrap_or(0.0),
        frames_sent: d(&["sent", "framesSent"]),
        audio_energy: d(&["audio", "totalAudioEnergy"]).unwrap_or(0.0),
        samples_received: d(&["audio", "totalSamplesReceived"]).unwrap_or(0.0),
        concealed: d(&["audio", "concealedSamples"]).unwrap_or(0.0),
        first: a.clone(),
        last: b.clone(),
    })
}

// ---------------------------------------------------------------------------
// whep_play.py
// ---------------------------------------------------------------------------

/// What whep_play.py printed, and how it ended.
pub struct WhepRun {
    pub lines: Vec<Value>,
    pub raw: String,
    pub exit: Option<i32>,
}

impl WhepRun {
    pub fn event(&self, name: &str) -> Option<&Value> {
        self.lines.iter().find(|l| l["event"] == name)
    }
}

/// Starts `python3 tests/py/whep_play.py URL SECONDS` (plus `extra` before the URL); the
/// caller polls while it runs and then calls [`WhepChild::finish`].
pub struct WhepChild {
    guard: ChildGuard,
    out_path: PathBuf,
    err_path: PathBuf,
}

pub fn start_whep(url: &str, seconds: f64, extra: &[&str]) -> WhepChild {
    let python = tool("python3");
    let script = tests_dir().join("py").join("whep_play.py");
    let check = Command::new(&python).args(["-c", "import aiortc, av"]).output().expect("run python3");
    assert!(check.status.success(), "aiortc is not installed for python3 (tools/test-all: python3 -m pip install aiortc): {}", String::from_utf8_lossy(&check.stderr));
    let out_path = scratch_path("whep-play", "out");
    let err_path = scratch_path("whep-play", "err");
    let child = Command::new(python)
        .arg(&script)
        .args(extra)
        .arg(url)
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("whep out"))
        .stderr(File::create(&err_path).expect("whep err"))
        .spawn()
        .expect("start python3 whep_play.py");
    WhepChild { guard: ChildGuard::new("whep_play.py", child), out_path, err_path }
}

impl WhepChild {
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }
    /// Waits for the script to end (at most `timeout`, then it is killed and this panics).
    pub fn finish(mut self, timeout: Duration) -> WhepRun {
        let st = wait_child(&mut self.guard.child, timeout);
        let out = read_file_lossy(&self.out_path);
        let err = read_file_lossy(&self.err_path);
        assert!(st.is_some(), "whep_play.py still running after {timeout:?}; stdout:\n{out}\nstderr:\n{}", tail(&err, 30));
        let raw = format!("{out}{}", if err.trim().is_empty() { String::new() } else { format!("--- stderr:\n{}", tail(&err, 30)) });
        let lines = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        WhepRun { lines, raw, exit: st.and_then(|s| s.code()) }
    }
}

pub fn run_whep(url: &str, seconds: f64, extra: &[&str], timeout: Duration) -> WhepRun {
    start_whep(url, seconds, extra).finish(timeout)
}

// ---------------------------------------------------------------------------
// RTMP sources and the API
// ---------------------------------------------------------------------------

/// ffmpeg publishing testsrc2 640x360 at 30 fps as H.264 High with two B-frames between
/// references (x264 without zerolatency: frames reordered, composition times in the FLV),
/// plus a 440 Hz tone as AAC, over RTMP, in real time.
pub fn publish_with_b_frames(url: &str) -> Publisher {
    let log_path = scratch_path("publisher-bframes", "log");
    let child = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(["-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-map", "0:v", "-map", "1:a"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-bf", "2", "-pix_fmt", "yuv420p"])
        .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-b:v", "800k", "-maxrate", "800k", "-bufsize", "800k"])
        .args(["-c:a", "aac", "-ar", "48000", "-b:a", "128k"])
        .args(["-flvflags", "no_duration_filesize", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path).expect("publisher log"))
        .spawn()
        .expect("start ffmpeg publisher");
    Publisher { guard: ChildGuard::new("ffmpeg publisher (B-frames)", child), url: url.to_string(), log_path }
}

/// /api/streams' `webrtc_viewers` of `name` (None: the stream or the field is absent).
pub fn webrtc_viewers(server: &Server, name: &str) -> Option<u64> {
    server.stream(name)?.get("webrtc_viewers")?.as_u64()
}

/// A playback counter of a /api/streams stream object (`rtp_packets_out`, `rtp_bytes_out`,
/// `retransmits`, `plis_received`): at the stream's top level or in its `playback` object.
pub fn playback_counter(stream: &Value, key: &str) -> Option<u64> {
    stream.get(key).or_else(|| stream.get("playback")?.get(key))?.as_u64()
}

/// Polls /api/streams for `name` until `stop` is set; returns the stream objects seen.
pub fn watch_stream(port: u16, name: &str, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> thread::JoinHandle<Vec<Value>> {
    let name = name.to_string();
    thread::spawn(move || {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((200, body)) = http_get(port, "/api/streams") {
                if let Ok(v) = serde_json::from_str::<Value>(&body) {
                    if let Some(s) = v["streams"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name.as_str())) {
                        seen.push(s.clone());
                    }
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
        seen
    })
}
