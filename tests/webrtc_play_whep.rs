//! WHEP playback with a WebRTC peer we did not write: aiortc (tests/py/whep_play.py) POSTs
//! a recvonly offer to /whep/NAME and decodes what comes back; the source is ffmpeg
//! publishing testsrc2 640x360 at 30 fps (H.264) and a 440 Hz tone (AAC) over RTMP.
//!
//! 1. A live stream: 201 with `Location: /whep/NAME/<id>` and an `application/sdp` answer
//!    (H.264 and Opus); over 8 s aiortc decodes at least 80 % of 30 fps of 640x360 frames
//!    with a picture in them, pts increasing, and 48 kHz audio that is not silence (the
//!    server's AAC → Opus); DELETE on the Location answers 200 or 204. /api/streams counts
//!    one WebRTC viewer while it plays and none after the DELETE (the source still live).
//!    Before that, an offer that is not SDP is refused with 400.
//! 2. A name that is not live: 404 with a reason in the body; nothing is counted.
//! 3. A source with B-frames, server without `--transcode`: 503 "Transcoding required, but
//!    disabled".
//!
//! Each runs in a loopback-only network namespace (TESTING.md); aiortc's ICE uses the
//! namespace's 127.0.0.2 (it leaves 127.0.0.1 out itself).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/play.rs"]
mod play;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::signal::http_raw;
use common::{netns, tail, wait_for, Publisher, Server};
use play::{playback_counter, publish_with_b_frames, run_whep, serial, start_whep, watch_stream, webrtc_viewers, WhepRun};

const WINDOW_SECS: f64 = 8.0;
const SOURCE_FPS: f64 = 30.0;
const MIN_RATIO: f64 = 0.8;
/// RMS (of full scale) above which decoded audio is not silence; ffmpeg's sine has
/// amplitude 1/8, RMS about 0.088.
const MIN_RMS: f64 = 0.01;

fn context(run: &WhepRun, server: &Server) -> String {
    format!("whep_play.py (exit {:?}):\n{}\nserver log tail:\n{}", run.exit, run.raw, tail(&server.log(), 30))
}

#[test]
fn aiortc_plays_an_rtmp_stream_over_whep() {
    let _one = serial();
    if netns::reexec("aiortc_plays_an_rtmp_stream_over_whep") {
        return;
    }
    let name = "whepplay1";
    let server = Server::start(&[]);
    let publisher = Publisher::ffmpeg(&server.rtmp_url(name), 1000);
    server.wait_stream_live(name, Duration::from_secs(10));

    let (code, _, body) = http_raw(server.http_port, "POST", &format!("/whep/{name}"), "Content-Type: application/sdp\r\n", "this is not an offer\r\n");
    assert_eq!(code, 400, "an offer that is not SDP: {code} {body:?}");
    assert_eq!(webrtc_viewers(&server, name), Some(0), "no viewer from the refused offer: {:?}", server.stream(name));

    let url = format!("http://127.0.0.1:{}/whep/{name}", server.http_port);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_stream(server.http_port, name, stop.clone());
    let run = run_whep(&url, WINDOW_SECS, &[], Duration::from_secs(40));
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().expect("the /api/streams watcher");
    let ctx = context(&run, &server);

    let post = run.event("post").unwrap_or_else(|| panic!("no POST made; {ctx}"));
    assert_eq!(post["status"], 201, "POST /whep/{name}; {ctx}");
    let location = post["location"].as_str().unwrap_or("");
    let id = location.strip_prefix(&format!("/whep/{name}/")).unwrap_or_else(|| panic!("Location {location:?} is not /whep/{name}/<id>"));
    assert!(!id.is_empty() && !id.contains('/'), "the resource id in {location:?}");
    assert!(post["content_type"].as_str().is_some_and(|c| c.starts_with("application/sdp")), "the answer's Content-Type: {post}");
    let video_codecs = post["answer_codecs"]["video"].as_array().cloned().unwrap_or_default();
    assert!(video_codecs.iter().any(|c| c.as_str().is_some_and(is_h264)), "H.264 in the answer's video: {post}");
    assert!(!video_codecs.iter().any(|c| c.as_str().is_some_and(|c| c.contains("VP8"))), "no VP8 in the answer: {post}");
    let audio_codecs = post["answer_codecs"]["audio"].as_array().cloned().unwrap_or_default();
    assert!(audio_codecs.iter().any(|c| c.as_str().is_some_and(|c| c.to_ascii_lowercase().contains("opus/48000"))), "Opus in the answer's audio: {post}");
    assert_eq!(run.exit, Some(0), "whep_play.py ends well (connected, DELETE 2xx); {ctx}");

    let r = run.event("result").unwrap_or_else(|| panic!("no result; {ctx}"));
    eprintln!("aiortc over WHEP: {r}");
    let window = r["window_s"].as_f64().unwrap_or(0.0);
    let v = &r["video"];
    let want = MIN_RATIO * SOURCE_FPS * window;
    let got = v["frames_in_window"].as_f64().unwrap_or(0.0);
    assert!(got >= want, "aiortc decoded {got} video frames in {window} s, want >= {want:.0}: {v}");
    assert_eq!(v["pts_non_monotonic"], 0, "video pts increase: {v}");
    assert_eq!(v["pts_missing"], 0, "every video frame has a pts: {v}");
    assert_eq!(v["sizes"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()), Some(vec!["640x360".to_string()]), "the source's picture size: {v}");
    assert!(v["luma_stddev"].as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|x| x.as_f64().unwrap_or(0.0) > 10.0)), "the frames show testsrc2, not a flat picture: {v}");
    assert!(v["max_gap_ms"].as_u64().unwrap_or(u64::MAX) < 1000, "no second-long stall in the window: {v}");

    let a = &r["audio"];
    assert!(a.get("error").is_none(), "{a}");
    let samples = a["samples_in_window"].as_f64().unwrap_or(0.0);
    assert!(samples >= MIN_RATIO * 48000.0 * window, "audio samples decoded in the window: {samples}, want >= {:.0}: {a}", MIN_RATIO * 48000.0 * window);
    assert_eq!(a["sample_rates"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()), Some(vec!["48000".to_string()]), "48 kHz audio: {a}");
    assert!(a["rms"].as_f64().unwrap_or(0.0) > MIN_RMS, "the audio is not silence: {a}");
    assert_eq!(a["pts_non_monotonic"], 0, "audio pts increase: {a}");
    assert!(a["max_gap_ms"].as_u64().unwrap_or(u64::MAX) < 500, "no half-second hole in the audio: {a}");

    let del = run.event("delete").unwrap_or_else(|| panic!("no DELETE; {ctx}"));
    assert!(del["status"] == 200 || del["status"] == 204, "DELETE {location}: {del}");

    let viewers: Vec<Option<u64>> = seen.iter().map(|s| s["webrtc_viewers"].as_u64()).collect();
    assert!(viewers.contains(&Some(1)), "/api/streams webrtc_viewers while aiortc played: {viewers:?}");
    assert!(viewers.iter().all(|v| v.is_some_and(|n| n <= 1)), "never more than the one viewer: {viewers:?}");
    let out = seen.iter().filter_map(|s| playback_counter(s, "rtp_packets_out")).max().unwrap_or(0);
    assert!(out as f64 >= got, "rtp_packets_out ({out}) at least the frames aiortc decoded ({got})");
    wait_for(Duration::from_secs(3), "webrtc_viewers 0 after the DELETE", || webrtc_viewers(&server, name) == Some(0));
    let m = server.metrics();
    assert!(m.has("rtcbridge_webrtc_viewers"), "/metrics has rtcbridge_webrtc_viewers");
    assert_eq!(m.sum("rtcbridge_webrtc_viewers"), 0.0, "rtcbridge_webrtc_viewers after the DELETE");
    assert!(m.sum("rtcbridge_rtp_out_packets_total") >= got, "rtcbridge_rtp_out_packets_total");
    assert!(server.stream(name).is_some(), "the source is still live: {}", publisher.url);
}

#[test]
fn whep_for_a_name_that_is_not_live_is_404() {
    let _one = serial();
    if netns::reexec("whep_for_a_name_that_is_not_live_is_404") {
        return;
    }
    let server = Server::start(&[]);
    let url = format!("http://127.0.0.1:{}/whep/nobody-here", server.http_port);
    let run = run_whep(&url, 2.0, &[], Duration::from_secs(20));
    let ctx = context(&run, &server);
    let post = run.event("post").unwrap_or_else(|| panic!("no POST made; {ctx}"));
    assert_eq!(post["status"], 404, "POST /whep/nobody-here; {ctx}");
    assert!(post["location"].is_null(), "no Location for a refused offer: {post}");
    let err = run.event("error").unwrap_or_else(|| panic!("no error reported; {ctx}"));
    let reason = err["body"].as_str().unwrap_or("");
    assert!(!reason.trim().is_empty(), "404 with a reason in the body: {err}");
    eprintln!("404 reason: {reason:?}");
    assert_eq!(run.exit, Some(2), "whep_play.py gives up after the POST; {ctx}");
    assert!(server.stream("nobody-here").is_none(), "no stream made up for the name");
    let m = server.metrics();
    assert_eq!(m.sum("rtcbridge_webrtc_viewers"), 0.0, "no viewer counted");
}

#[test]
fn whep_of_b_frames_without_transcode_is_503() {
    let _one = serial();
    if netns::reexec("whep_of_b_frames_without_transcode_is_503") {
        return;
    }
    let name = "whepbf";
    let server = Server::start(&[]);
    let publisher = publish_with_b_frames(&server.rtmp_url(name));
    server.wait_stream_live(name, Duration::from_secs(10));
    wait_for(Duration::from_secs(10), "60 video frames from the B-frame source", || server.video_frames(name) >= 60);
    let url = format!("http://127.0.0.1:{}/whep/{name}", server.http_port);
    let child = start_whep(&url, 2.0, &[]);
    let run = child.finish(Duration::from_secs(20));
    let ctx = format!("{}\nffmpeg publisher log:\n{}", context(&run, &server), tail(&publisher.log(), 10));
    let post = run.event("post").unwrap_or_else(|| panic!("no POST made; {ctx}"));
    assert_eq!(post["status"], 503, "POST /whep/{name} for a source with B-frames; {ctx}");
    let body = run.event("error").and_then(|e| e["body"].as_str()).unwrap_or("");
    assert_eq!(body.trim(), "Transcoding required, but disabled", "the 503's reason; {ctx}");
    assert_eq!(webrtc_viewers(&server, name), Some(0), "no viewer counted: {:?}", server.stream(name));
}

/// An rtpmap value ("PT H264/90000") that names H.264.
fn is_h264(rtpmap: &str) -> bool {
    rtpmap.split_whitespace().nth(1).is_some_and(|c| c.to_ascii_uppercase().starts_with("H264/"))
}
