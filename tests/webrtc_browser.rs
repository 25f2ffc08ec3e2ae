//! Headless Chromium publishes a fake camera and microphone to rtcbridge,
//! through our own demo page and through the Flashphoner Web SDK's unchanged
//! Two Way Streaming example page. Runs inside a loopback-only network namespace.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{netns, tool, Server};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("js")
}

/// One status line from publish.mjs.
#[derive(Debug)]
struct Ev {
    t: u64,
    el: String,
    text: String,
}

/// Run the browser driver; returns status changes (element, text, ms) and the raw output.
fn run_browser(server: &Server, page: &str, name: &str, seconds: u32, mut during: impl FnMut(&[Ev])) -> (Vec<Ev>, String) {
    let node = tool("node");
    assert!(
        js_dir().join("node_modules").join("playwright-core").is_dir(),
        "tests/js/node_modules missing: run tools/test-all (npm install in tests/js)"
    );
    assert!(PathBuf::from("/usr/bin/chromium").is_file(), "chromium not found: run tools/test-all");
    let mut child = Command::new(node)
        .current_dir(js_dir())
        .args([
            "publish.mjs",
            "--page",
            page,
            "--http",
            &format!("http://127.0.0.1:{}", server.http_port),
            "--ws",
            &format!("ws://127.0.0.1:{}/", server.http_port),
            "--name",
            name,
            "--seconds",
            &seconds.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node publish.mjs");
    let out = child.stdout.take().expect("stdout");
    let mut evs = Vec::new();
    let mut raw = String::new();
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 60);
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        raw.push_str(&line);
        raw.push('\n');
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let (Some(el), Some(text)) = (v.get("el").and_then(|x| x.as_str()), v.get("text").and_then(|x| x.as_str())) {
                evs.push(Ev { t: v.get("t").and_then(|x| x.as_u64()).unwrap_or(0), el: el.to_owned(), text: text.to_owned() });
                during(&evs);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("browser driver ran past its deadline:\n{raw}");
        }
    }
    let _ = child.wait();
    (evs, raw)
}

fn status_seq(evs: &[Ev], el: &str) -> Vec<String> {
    evs.iter().filter(|e| e.el == el).map(|e| e.text.clone()).collect()
}

fn first_at(evs: &[Ev], el: &str, text: &str) -> Option<u64> {
    evs.iter().find(|e| e.el == el && e.text == text).map(|e| e.t)
}

#[test]
fn chromium_publishes_through_demo_page() {
    if netns::reexec("chromium_publishes_through_demo_page") {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    let (evs, raw) = run_browser(&server, "demo", "cam1", 3, |_| {});
    let seq = status_seq(&evs, "#publishStatus");
    assert!(seq.contains(&"PUBLISHING".to_string()), "never PUBLISHING: {seq:?}\n{raw}\n{}", server.log());
    let pending = first_at(&evs, "#publishStatus", "PENDING").expect("PENDING seen");
    let publishing = first_at(&evs, "#publishStatus", "PUBLISHING").expect("PUBLISHING seen");
    assert!(publishing - pending <= 5000, "PUBLISHING took {} ms", publishing - pending);
    assert_eq!(seq.last().map(String::as_str), Some("UNPUBLISHED"), "stop gives UNPUBLISHED: {seq:?}");
}

#[test]
fn chromium_stream_has_h264_and_opus_in_api() {
    if netns::reexec("chromium_stream_has_h264_and_opus_in_api") {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    let mut best: Option<serde_json::Value> = None;
    // Poll the API from a thread while the browser publishes (the driver blocks).
    let port = server.http_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let poller = std::thread::spawn(move || {
        let mut last = None;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((200, body)) = common::http_get(port, "/api/streams") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    if let Some(s) = v["streams"].as_array().and_then(|a| a.iter().find(|s| s["name"] == "cam2")) {
                        last = Some(s.clone());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        last
    });
    let (evs, raw) = run_browser(&server, "demo", "cam2", 11, |_| {});
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    best = poller.join().expect("poller");
    let s = best.unwrap_or_else(|| panic!("stream cam2 never in /api/streams\n{raw}\n{}", server.log()));
    let _ = evs;
    assert_eq!(s["source"], "webrtc", "{s}");
    let v = &s["video"];
    assert_eq!(v["codec"], "H264", "{s}");
    assert!(v["width"].as_u64().unwrap_or(0) >= 320 && v["height"].as_u64().unwrap_or(0) >= 180, "real size: {s}");
    assert!(v["frames"].as_u64().unwrap_or(0) >= 100, "at least 100 video frames: {s}");
    assert!(v["keyframes"].as_u64().unwrap_or(0) >= 1, "a keyframe: {s}");
    let a = &s["audio"];
    assert_eq!(a["codec"], "opus", "{s}");
    assert!(a["frames"].as_u64().unwrap_or(0) >= 250, "at least 250 Opus frames: {s}");
}

#[test]
fn flashphoner_sdk_two_way_streaming_page_publishes() {
    if netns::reexec("flashphoner_sdk_two_way_streaming_page_publishes") {
        return;
    }
    let server = Server::start(&[]);
    let (evs, raw) = run_browser(&server, "sdk", "sdk1", 6, |_| {});
    let conn = status_seq(&evs, "#connectStatus");
    assert!(conn.contains(&"ESTABLISHED".to_string()), "SDK never ESTABLISHED: {conn:?}\n{raw}\n{}", server.log());
    let seq = status_seq(&evs, "#publishStatus");
    let i_pub = seq.iter().position(|s| s == "PUBLISHING").unwrap_or_else(|| panic!("never PUBLISHING: {seq:?}\n{raw}\n{}", server.log()));
    let i_unpub = seq.iter().position(|s| s == "UNPUBLISHED").unwrap_or_else(|| panic!("never UNPUBLISHED: {seq:?}\n{raw}"));
    assert!(i_pub < i_unpub, "PUBLISHING then UNPUBLISHED: {seq:?}");
}
