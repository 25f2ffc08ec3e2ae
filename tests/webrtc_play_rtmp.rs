//! WebRTC playback of streams that come in over RTMP, in the real Flashphoner Web SDK's
//! Player example page (examples/demo/streaming/player), unchanged, in headless Chromium
//! (tests/js/play.mjs). ffmpeg publishes testsrc2 640x360 at 30 fps as H.264 and a 440 Hz
//! tone as AAC; the browser can take neither AAC nor reordered frames, so the server sends
//! the audio as Opus and refuses B-frames unless it may transcode.
//!
//! 1. No B-frames (x264 zerolatency): the page shows PLAYING; over 10 s Chromium decodes at
//!    least 80 % of 30 fps, 640x360 H.264, and audio that is not silence (inbound-rtp
//!    totalAudioEnergy) with few concealed samples; Stop shows STOPPED.
//! 2. H.264 High with B-frames, server without `--transcode`: FAILED with "Transcoding
//!    required, but disabled" (the page shows the server's info as it is).
//! 3. The same source, server with `--transcode`: PLAYING, and frames decode as in 1.
//!
//! Each runs in a loopback-only network namespace (TESTING.md), one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/play.rs"]
mod play;

use std::time::Duration;

use common::{netns, tail, Publisher, Server};
use play::{media_window, publish_with_b_frames, run_page, serial, webrtc_viewers, MediaWindow, Page, PageRun};

/// The frame rate ffmpeg publishes.
const SOURCE_FPS: f64 = 30.0;
const MEASURE_SECS: u32 = 10;
const MIN_RATIO: f64 = 0.8;
/// Mean totalAudioEnergy per second above which audio is not silence: a level of 0.01 of
/// full scale. ffmpeg's sine has amplitude 1/8, and the Player page sets its volume to 50,
/// which Chromium's inbound audioLevel includes: about 0.06, or 0.004 per second.
const MIN_ENERGY_PER_SEC: f64 = 1e-4;
/// At most this share of the received audio samples may be concealment.
const MAX_CONCEALED: f64 = 0.1;
const RUN_TIMEOUT: Duration = Duration::from_secs(45);

fn context(run: &PageRun, server: &Server, publisher: &Publisher) -> String {
    format!(
        "#status {:?}, #info {:?}, play stream events {:?}\ndriver output:\n{}\nffmpeg publisher log:\n{}\nserver log tail:\n{}",
        run.play_statuses(),
        run.statuses("#info"),
        run.play_event_summary(),
        run.brief(),
        tail(&publisher.log(), 10),
        tail(&server.log(), 30)
    )
}

/// Video at >= 80 % of the source's frame rate, H.264, the source's size.
fn assert_video_decodes(w: &MediaWindow, ctx: &str) {
    assert!(w.secs >= f64::from(MEASURE_SECS) - 2.0, "the window is {:.1} s, asked {MEASURE_SECS}: {}\n{ctx}", w.secs, w.describe());
    let want = MIN_RATIO * SOURCE_FPS * w.secs;
    assert!(w.frames_decoded >= want, "Chromium decoded {} frames in {:.1} s, want >= {want:.0} ({:.0} % of {SOURCE_FPS} fps): {}\n{ctx}", w.frames_decoded, w.secs, MIN_RATIO * 100.0, w.describe());
    assert_eq!(w.last["video"]["codec"].as_str(), Some("video/H264"), "H.264 to the browser: {}", w.describe());
    let size = (w.last["video"]["frameWidth"].as_u64(), w.last["video"]["frameHeight"].as_u64());
    assert_eq!(size, (Some(640), Some(360)), "the source's picture size: {}", w.describe());
}

#[test]
fn sdk_player_page_plays_an_rtmp_stream() {
    let _one = serial();
    if netns::reexec("sdk_player_page_plays_an_rtmp_stream") {
        return;
    }
    let name = "rtmpplay1";
    let server = Server::start(&[]);
    let publisher = Publisher::ffmpeg(&server.rtmp_url(name), 1000);
    server.wait_stream_live(name, Duration::from_secs(10));
    let mut viewers_while_playing = None;
    let run = run_page(Page::Player, server.http_port, name, None, &["play", &format!("measure:{MEASURE_SECS}"), "stop-play", "idle:1"], RUN_TIMEOUT, |line| {
        if viewers_while_playing.is_none() && line.get("stats").is_some_and(|s| s["video"]["framesDecoded"].as_f64().unwrap_or(0.0) > 0.0) {
            viewers_while_playing = Some(webrtc_viewers(&server, name));
        }
    });
    let ctx = context(&run, &server, &publisher);
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; {ctx}", run.aborted());
    let seq: Vec<String> = run.play_statuses().into_iter().filter(|s| s != "ESTABLISHED").collect();
    assert_eq!(seq, ["PLAYING", "STOPPED"], "#status: PLAYING, then STOPPED after Stop; {ctx}");
    let w = media_window(&run, 1.0).unwrap_or_else(|| panic!("no window of getStats() samples with decoded video; {ctx}"));
    eprintln!("{}", w.describe());
    assert_video_decodes(&w, &ctx);
    assert_eq!(w.last["audio"]["codec"].as_str(), Some("audio/opus"), "AAC reaches the browser as Opus: {}", w.describe());
    assert!(w.energy_per_sec() > MIN_ENERGY_PER_SEC, "the browser's audio is silence: {}\n{ctx}", w.describe());
    assert!(w.samples_received >= 48000.0 * w.secs * MIN_RATIO, "audio samples received (48 kHz): {}", w.describe());
    assert!(w.concealed_ratio() <= MAX_CONCEALED, "too much of the audio was concealment: {}", w.describe());
    assert_eq!(viewers_while_playing, Some(Some(1)), "/api/streams webrtc_viewers while the page played");
    common::wait_for(Duration::from_secs(3), "webrtc_viewers 0 after Stop", || webrtc_viewers(&server, name) == Some(0));
}

#[test]
fn sdk_player_page_shows_transcoding_required_for_b_frames() {
    let _one = serial();
    if netns::reexec("sdk_player_page_shows_transcoding_required_for_b_frames") {
        return;
    }
    let name = "rtmpplay2";
    let server = Server::start(&[]);
    let publisher = publish_with_b_frames(&server.rtmp_url(name));
    server.wait_stream_live(name, Duration::from_secs(10));
    // A GOP in, so that whatever the server looks at to see B-frames has been seen.
    common::wait_for(Duration::from_secs(10), "60 video frames from the B-frame source", || server.video_frames(name) >= 60);
    let run = run_page(Page::Player, server.http_port, name, None, &["play", "idle:1"], RUN_TIMEOUT, |_| {});
    let ctx = context(&run, &server, &publisher);
    let seq: Vec<String> = run.play_statuses().into_iter().filter(|s| s != "ESTABLISHED").collect();
    assert_eq!(seq, ["FAILED"], "#status for a source with B-frames and no --transcode; {ctx}");
    assert_eq!(run.last("#info").as_deref(), Some("Transcoding required, but disabled"), "#info; {ctx}");
    assert!(run.stats().iter().all(|(_, s)| s.get("video").is_none()), "no video reached the page; {ctx}");
}

#[test]
fn sdk_player_page_plays_b_frames_with_transcode() {
    let _one = serial();
    if netns::reexec("sdk_player_page_plays_b_frames_with_transcode") {
        return;
    }
    let name = "rtmpplay3";
    let server = Server::start(&["--transcode"]);
    let publisher = publish_with_b_frames(&server.rtmp_url(name));
    server.wait_stream_live(name, Duration::from_secs(10));
    let run = run_page(Page::Player, server.http_port, name, None, &["play", &format!("measure:{MEASURE_SECS}"), "stop-play"], RUN_TIMEOUT, |_| {});
    let ctx = context(&run, &server, &publisher);
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; {ctx}", run.aborted());
    let seq: Vec<String> = run.play_statuses().into_iter().filter(|s| s != "ESTABLISHED").collect();
    assert_eq!(seq, ["PLAYING", "STOPPED"], "#status with --transcode; {ctx}");
    let w = media_window(&run, 1.0).unwrap_or_else(|| panic!("no window of getStats() samples with decoded video; {ctx}"));
    eprintln!("{}", w.describe());
    assert_video_decodes(&w, &ctx);
    assert!(w.energy_per_sec() > MIN_ENERGY_PER_SEC, "the browser's audio is silence: {}\n{ctx}", w.describe());
}
