//! WebRTC playback in a cluster, black-box: a `redis-server` on a free loopback port and three
//! `rtcbridge` nodes A, B, C joined to it (tests/common/cluster.rs: `--cluster redis://...
//! --workers 2`). ffmpeg publishes testsrc2 640x360 at 30 fps (H.264 without B-frames) and a
//! 440 Hz tone (AAC) over RTMP on A; aiortc (tests/py/whep_play.py) plays the same name over
//! WHEP on B.
//!
//! 1. B answers the POST 201 with a Location (the name is live on A: not 404), and over 8 s
//!    aiortc decodes at least 80 % of 30 fps of 640x360 video with a picture in it and 48 kHz
//!    audio that is not silence. While it plays, B's /metrics shows exactly one pull
//!    (`rtcbridge_cluster_pulls` summed over workers) and B's /api/streams lists the stream
//!    as source "pull" with one WebRTC viewer; A shows no pull. DELETE ends it (2xx).
//! 2. Then a WHEP POST on C for a name live on no node: 404 with a reason, and C pulls
//!    nothing.
//!
//! This is the proof that a WebRTC viewer of a stream published on another node plays it
//! through the node's RTMP pull. It runs in a loopback-only network namespace (TESTING.md)
//! with Redis, the nodes and the players; every child is ended when its guard drops.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/play.rs"]
mod play;

use std::time::{Duration, Instant};

use cluster::{cluster_json, directory_entry, node_id, node_url, start_node, stream_source, wait_alive, wait_directory, Redis};
use common::{netns, tail, Publisher, Server};
use play::{serial, start_whep, webrtc_viewers, WhepRun};
use serde_json::Value;

const WINDOW_SECS: f64 = 8.0;
const SOURCE_FPS: f64 = 30.0;
const MIN_RATIO: f64 = 0.8;
/// RMS (of full scale) above which decoded audio is not silence (ffmpeg's sine: about 0.088).
const MIN_RMS: f64 = 0.01;

/// What B (and A) said while the WHEP viewer on B played.
#[derive(Debug, Default)]
struct Sample {
    at: f64,
    b_pulls: f64,
    b_viewers: f64,
    a_pulls: f64,
    b_source: Option<String>,
    b_stream_viewers: Option<u64>,
}

fn logs(nodes: &[(&str, &Server)], lines: usize) -> String {
    nodes.iter().map(|(l, s)| format!("--- node {l} log ({}):\n{}", s.log_path.display(), tail(&s.log(), lines))).collect::<Vec<_>>().join("\n")
}

fn context(run: &WhepRun, nodes: &[(&str, &Server)]) -> String {
    format!("whep_play.py (exit {:?}):\n{}\n{}", run.exit, run.raw, logs(nodes, 40))
}

#[test]
fn whep_viewer_on_b_plays_a_stream_published_on_a_through_one_pull() {
    let _one = serial();
    if netns::reexec("whep_viewer_on_b_plays_a_stream_published_on_a_through_one_pull") {
        return;
    }
    let started = Instant::now();
    let name = "clusterwhep";
    // Declared first, dropped last: the nodes leave the directory while Redis still answers.
    let redis = Redis::start();
    let a = start_node(&redis, &[]);
    let b = start_node(&redis, &[]);
    let c = start_node(&redis, &[]);
    wait_alive(&[&a, &b, &c], 3, Duration::from_secs(5));
    let id_a = node_id(&a);
    eprintln!("cluster: redis {} A {id_a} (rtmp {}, http {}) B (http {}) C (http {})", redis.port, a.rtmp_port, a.http_port, b.http_port, c.http_port);
    let nodes = [("A", &a), ("B", &b), ("C", &c)];

    let mut publisher = Publisher::ffmpeg(&a.rtmp_url(name), 1000);
    a.wait_stream_live(name, Duration::from_secs(15));
    wait_directory(&b, name, &id_a, Duration::from_secs(5));
    assert!(b.stream(name).is_none(), "B has no local stream {name} before a viewer asks for it: {:?}", b.stream(name));
    assert_eq!(b.metrics().sum("rtcbridge_cluster_pulls"), 0.0, "B pulls nothing before the viewer");

    // 1. The WHEP viewer on B.
    let url = format!("http://127.0.0.1:{}/whep/{name}", b.http_port);
    let mut child = start_whep(&url, WINDOW_SECS, &[]);
    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    while child.is_running() && t0.elapsed() < Duration::from_secs(35) {
        let bm = b.metrics();
        samples.push(Sample {
            at: t0.elapsed().as_secs_f64(),
            b_pulls: bm.sum("rtcbridge_cluster_pulls"),
            b_viewers: bm.sum("rtcbridge_webrtc_viewers"),
            a_pulls: a.metrics().sum("rtcbridge_cluster_pulls"),
            b_source: stream_source(&b, name),
            b_stream_viewers: webrtc_viewers(&b, name),
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    let b_cluster: Value = cluster_json(&b);
    let run = child.finish(Duration::from_secs(10));
    let ctx = context(&run, &nodes);

    let post = run.event("post").unwrap_or_else(|| panic!("whep_play.py made no POST to B; {ctx}"));
    assert_eq!(post["status"], 201, "POST /whep/{name} on B (live on A, so not 404); {ctx}");
    let location = post["location"].as_str().unwrap_or("");
    assert!(location.starts_with(&format!("/whep/{name}/")), "B's Location {location:?} is /whep/{name}/<id>; {ctx}");
    assert_eq!(run.exit, Some(0), "whep_play.py ends well on B (connected, window ran, DELETE 2xx); {ctx}");

    let r = run.event("result").unwrap_or_else(|| panic!("no result from whep_play.py; {ctx}"));
    eprintln!("aiortc over WHEP on B: {r}");
    let window = r["window_s"].as_f64().unwrap_or(0.0);
    let v = &r["video"];
    let want = MIN_RATIO * SOURCE_FPS * window;
    let got = v["frames_in_window"].as_f64().unwrap_or(0.0);
    assert!(got >= want, "aiortc on B decoded {got} video frames of A's stream in {window} s, want >= {want:.0} (80 % of 30 fps): {v}\n{ctx}");
    assert_eq!(v["pts_non_monotonic"], 0, "video pts increase: {v}");
    assert_eq!(v["sizes"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()), Some(vec!["640x360".to_string()]), "the source's picture size: {v}");
    assert!(v["luma_stddev"].as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|x| x.as_f64().unwrap_or(0.0) > 10.0)), "the frames show testsrc2, not a flat picture: {v}");
    let au = &r["audio"];
    assert!(au.get("error").is_none(), "audio: {au}");
    let samples_in = au["samples_in_window"].as_f64().unwrap_or(0.0);
    let want_samples = MIN_RATIO * 48000.0 * window;
    assert!(samples_in >= want_samples, "aiortc on B decoded {samples_in} audio samples in {window} s, want >= {want_samples:.0}: {au}\n{ctx}");
    assert!(au["rms"].as_f64().unwrap_or(0.0) > MIN_RMS, "the audio on B is not silence: {au}");
    let del = run.event("delete").unwrap_or_else(|| panic!("no DELETE; {ctx}"));
    assert!(del["status"] == 200 || del["status"] == 204, "DELETE {location} on B: {del}");

    // One pull on B while the viewer played; none on A (it has the publisher).
    let brief: Vec<String> = samples.iter().map(|s| format!("{:.1}s pulls B {} A {} viewers B {} src {:?}", s.at, s.b_pulls, s.a_pulls, s.b_viewers, s.b_source)).collect();
    eprintln!("samples while playing on B:\n{}", brief.join("\n"));
    let max_pulls = samples.iter().map(|s| s.b_pulls).fold(0.0, f64::max);
    assert_eq!(max_pulls, 1.0, "B's rtcbridge_cluster_pulls (summed over workers) peaked at {max_pulls}, want exactly 1: {brief:?}");
    assert!(
        samples.iter().any(|s| s.b_pulls == 1.0 && s.b_viewers == 1.0),
        "B's /metrics never showed its 1 pull with the 1 WebRTC viewer (rtcbridge_webrtc_viewers): {brief:?}"
    );
    assert!(samples.iter().any(|s| s.b_source.as_deref() == Some("pull")), "B's /api/streams never listed {name} as source \"pull\": {brief:?}");
    assert!(samples.iter().any(|s| s.b_stream_viewers == Some(1)), "B's /api/streams never counted the WebRTC viewer of {name}: {brief:?}");
    assert!(samples.iter().all(|s| s.a_pulls == 0.0), "A (the origin) pulls nothing: {brief:?}");
    assert_eq!(directory_entry(&b_cluster, name), Some((id_a.clone(), node_url(&a))), "B's /api/cluster names A for {name}: {b_cluster}");
    assert!(publisher.is_running(), "A's ffmpeg publisher died: {}", publisher.log());

    // 2. A name live nowhere, on C: 404.
    let nobody = "clusterwhep-nobody";
    assert!(directory_entry(&cluster_json(&c), nobody).is_none(), "no node owns {nobody}");
    let url_c = format!("http://127.0.0.1:{}/whep/{nobody}", c.http_port);
    let run_c = start_whep(&url_c, 2.0, &[]).finish(Duration::from_secs(20));
    let ctx_c = context(&run_c, &nodes);
    let post_c = run_c.event("post").unwrap_or_else(|| panic!("whep_play.py made no POST to C; {ctx_c}"));
    assert_eq!(post_c["status"], 404, "POST /whep/{nobody} on C for a name live nowhere; {ctx_c}");
    assert!(post_c["location"].is_null(), "no Location for a refused offer: {post_c}");
    let reason = run_c.event("error").and_then(|e| e["body"].as_str()).unwrap_or("");
    assert!(!reason.trim().is_empty(), "C's 404 has a reason in the body; {ctx_c}");
    eprintln!("C's 404 reason: {reason:?}");
    assert_eq!(run_c.exit, Some(2), "whep_play.py gives up after C's 404; {ctx_c}");
    let cm = c.metrics();
    assert_eq!(cm.sum("rtcbridge_cluster_pulls"), 0.0, "C pulls nothing for a name live nowhere");
    assert_eq!(cm.sum("rtcbridge_webrtc_viewers"), 0.0, "C counts no viewer");
    assert!(c.stream(nobody).is_none(), "C made up no stream {nobody}");
    eprintln!("cluster WHEP test took {:.1} s", started.elapsed().as_secs_f64());
    drop(publisher);
    drop((a, b, c));
    drop(redis);
}
