//! WebRTC playback through the real Flashphoner Web SDK: its Two Way Streaming example page,
//! unchanged, in headless Chromium with a fake camera and microphone (tests/js/play.mjs).
//! The page publishes a stream and plays it back from the server in the same page, which
//! is what the SDK's `session.createStream({name}).play()` does against WCS.
//!
//! 1. Publish, Available, Play, Stop: the page shows AVAILABLE, then PLAYING; over 10 s its
//!    remote video decodes at least 80 % of the frames the same page's publisher sends (the
//!    page's own RTCPeerConnections' getStats(): inbound-rtp framesDecoded against
//!    outbound-rtp framesSent), as H.264, and its remote audio is not silence (inbound-rtp
//!    totalAudioEnergy; Chromium's fake microphone beeps). /api/streams counts one WebRTC
//!    viewer while it plays and none after Stop, which the page shows as STOPPED.
//! 2. Play, then the publisher stops: the viewer's status becomes STOPPED, and the server's
//!    notifyStreamStatusEvent says "Stopped by publisher stop" (the page shows no info for
//!    STOPPED; play.mjs reads the page's signaling messages).
//! 3. Play of a name nobody publishes: Available shows UNAVAILABLE, Play shows FAILED with
//!    "Stream not found" (the server's default for names that are not live).
//! 4. With `--unknown-stream wait`: Play first, Publish after: the viewer waits and plays.
//!
//! Each runs in a loopback-only network namespace (TESTING.md), one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/play.rs"]
mod play;

use std::time::Duration;

use common::{netns, tail, wait_for, Server};
use play::{media_window, playback_counter, run_page, serial, webrtc_viewers, Page, PageRun};

/// Seconds of getStats() samples taken while playing.
const MEASURE_SECS: u32 = 10;
/// Share of the sent frames the viewer must decode.
const MIN_RATIO: f64 = 0.8;
/// Below this the page's own publisher is not really sending, and the ratio means nothing.
const MIN_SENT_FPS: f64 = 5.0;
/// Mean inbound-rtp totalAudioEnergy per second above which audio is not silence (a level
/// of 0.03 of full scale; Chromium's fake microphone beeps give about 0.3 per second here).
const MIN_ENERGY_PER_SEC: f64 = 1e-3;
/// The server's default --unpublish-grace.
const GRACE_MS: u64 = 5000;
/// The whole browser run's deadline.
const RUN_TIMEOUT: Duration = Duration::from_secs(50);

fn context(run: &PageRun, server: &Server) -> String {
    format!(
        "play status {:?}, play stream events {:?}\ndriver output:\n{}\nserver log tail:\n{}",
        run.play_statuses(),
        run.play_event_summary(),
        run.brief(),
        tail(&server.log(), 30)
    )
}

#[test]
fn sdk_two_way_page_plays_back_what_it_publishes() {
    let _one = serial();
    if netns::reexec("sdk_two_way_page_plays_back_what_it_publishes") {
        return;
    }
    let name = "sdkplay1";
    let server = Server::start(&[]);
    let measure = format!("measure:{MEASURE_SECS}");
    // Secondary: what the API says while the page plays and once it has stopped.
    let mut viewers_while_playing: Vec<Option<u64>> = Vec::new();
    let mut viewers_after_stop: Option<Option<u64>> = None;
    let mut stream_while_playing = None;
    let run = run_page(
        Page::TwoWay,
        server.http_port,
        name,
        None,
        &["connect", "publish", "available", "play", &measure, "stop-play", "idle:3", "stop-publish"],
        RUN_TIMEOUT,
        |line| {
            if line.get("stats").is_some_and(|s| s["video"]["framesDecoded"].as_f64().unwrap_or(0.0) > 0.0) && viewers_while_playing.len() < 3 {
                viewers_while_playing.push(webrtc_viewers(&server, name));
                stream_while_playing = server.stream(name);
            }
            if line["el"] == "#playStatus" && line["text"] == "STOPPED" {
                // The page still publishes for 3 s: the stream is there, its viewer gone.
                let deadline = std::time::Instant::now() + Duration::from_secs(3);
                let mut v = webrtc_viewers(&server, name);
                while v != Some(0) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    v = webrtc_viewers(&server, name);
                }
                viewers_after_stop = Some(v);
            }
        },
    );
    let ctx = context(&run, &server);
    assert_eq!(run.last("#publishStatus").as_deref(), Some("UNPUBLISHED"), "the page published and unpublished; {ctx}");
    assert_eq!(run.statuses("#availableStatus"), ["AVAILABLE"], "Available for a published name; {ctx}");
    let seq = run.play_statuses();
    assert_eq!(seq, ["PLAYING", "STOPPED"], "the play status: PLAYING, then STOPPED after Stop; {ctx}");
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; {ctx}", run.aborted());
    let events = run.play_event_summary();
    assert!(events.iter().any(|(s, _)| s == "PLAYING"), "the server sent PLAYING: {events:?}");
    assert_eq!(events.last().map(|(s, _)| s.as_str()), Some("STOPPED"), "the server sent STOPPED last: {events:?}");

    let w = media_window(&run, 1.0).unwrap_or_else(|| panic!("no window of getStats() samples with decoded video; {ctx}"));
    eprintln!("{}", w.describe());
    let sent = w.frames_sent.unwrap_or_else(|| panic!("the page's publisher has no outbound-rtp video: {}", w.describe()));
    assert!(w.secs >= f64::from(MEASURE_SECS) - 2.0, "the window is {:.1} s, asked {MEASURE_SECS}: {}", w.secs, w.describe());
    assert!(w.sent_fps().unwrap_or(0.0) >= MIN_SENT_FPS, "the page's publisher sends too little to judge: {}", w.describe());
    assert!(
        w.frames_decoded >= MIN_RATIO * sent,
        "the viewer decoded {} frames while the page sent {sent} (want >= {:.0} %): {}",
        w.frames_decoded,
        MIN_RATIO * 100.0,
        w.describe()
    );
    let codec = w.last["video"]["codec"].as_str().unwrap_or("");
    assert_eq!(codec, "video/H264", "the viewer decodes H.264: {}", w.describe());
    assert!(w.last["video"]["frameWidth"].as_u64().unwrap_or(0) >= 320, "a real picture size: {}", w.describe());
    assert!(w.energy_per_sec() > MIN_ENERGY_PER_SEC, "the viewer's audio is silence: {}", w.describe());
    assert_eq!(w.last["audio"]["codec"].as_str(), Some("audio/opus"), "Opus audio: {}", w.describe());
    assert_eq!(w.last["element"]["muted"], false, "the page's video element plays unmuted (else Chromium reports no audio energy): {}", w.describe());

    assert!(viewers_while_playing.contains(&Some(1)), "/api/streams webrtc_viewers while playing: {viewers_while_playing:?}; stream {stream_while_playing:?}");
    let s = stream_while_playing.expect("the stream while playing");
    assert!(playback_counter(&s, "rtp_packets_out").unwrap_or(0) > 0, "rtp_packets_out while playing: {s}");
    assert_eq!(viewers_after_stop, Some(Some(0)), "webrtc_viewers within 3 s of STOPPED (the publisher still live)");
    wait_for(Duration::from_secs(5), "the stream to end after the page unpublished", || server.stream(name).is_none());
}

#[test]
fn sdk_viewer_is_stopped_when_the_publisher_stops() {
    let _one = serial();
    if netns::reexec("sdk_viewer_is_stopped_when_the_publisher_stops") {
        return;
    }
    let name = "sdkplay2";
    let server = Server::start(&[]);
    let run = run_page(Page::TwoWay, server.http_port, name, None, &["connect", "publish", "play", "measure:3", "stop-publish", "wait-play:STOPPED:10", "idle:1"], RUN_TIMEOUT, |_| {});
    let ctx = context(&run, &server);
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; {ctx}", run.aborted());
    assert_eq!(run.play_statuses(), ["PLAYING", "STOPPED"], "the viewer played, then stopped with its publisher; {ctx}");
    let w = media_window(&run, 0.0).unwrap_or_else(|| panic!("no decoded video before the publisher stopped; {ctx}"));
    assert!(w.frames_decoded > 0.0, "frames decoded before the publisher stopped: {}", w.describe());
    let stopped: Vec<_> = run.play_events().into_iter().filter(|e| e["status"] == "STOPPED").collect();
    assert_eq!(stopped.len(), 1, "one STOPPED for the viewer; {ctx}");
    assert_eq!(stopped[0]["info"], "Stopped by publisher stop", "the STOPPED event's info: {}", stopped[0]);
    // The server keeps a stream's viewers for --unpublish-grace (5 s by default) in case its
    // publisher comes back, as it does for RTMP players; not much longer than that.
    let unpublished = run.first_at("#publishStatus", "UNPUBLISHED").expect("UNPUBLISHED time");
    let stopped_at = run.first_at("#playStatus", "STOPPED").expect("STOPPED time");
    let after = stopped_at.saturating_sub(unpublished);
    eprintln!("the viewer stopped {after} ms after the publisher");
    assert!(after <= GRACE_MS + 3000, "the viewer stopped {after} ms after the publisher (grace {GRACE_MS} ms)");
}

#[test]
fn sdk_play_of_a_name_nobody_publishes_fails_with_stream_not_found() {
    let _one = serial();
    if netns::reexec("sdk_play_of_a_name_nobody_publishes_fails_with_stream_not_found") {
        return;
    }
    let server = Server::start(&[]);
    let run = run_page(Page::TwoWay, server.http_port, "sdkplay3", Some("nobody-here"), &["connect", "available", "play", "idle:1"], RUN_TIMEOUT, |_| {});
    let ctx = context(&run, &server);
    assert_eq!(run.statuses("#availableStatus"), ["UNAVAILABLE"], "Available for a name nobody publishes; {ctx}");
    let avail = run.ws("in", "availableStream");
    assert_eq!(avail.len(), 1, "one availableStream answer; {ctx}");
    assert_eq!(avail[0]["status"], "false", "availableStream answer: {}", avail[0]);
    assert_eq!(run.play_statuses(), ["FAILED"], "the play status; {ctx}");
    // The two-way page words infos it has no case for as "Other: INFO".
    assert_eq!(run.last("#playInfo").as_deref(), Some("Other: Stream not found"), "the page's play info; {ctx}");
    let events = run.play_event_summary();
    assert_eq!(events, [("FAILED".to_string(), "Stream not found".to_string())], "the server's events for the play stream; {ctx}");
    assert!(run.ws("in", "setRemoteSDP").is_empty(), "no answer SDP for a stream that is not there; {ctx}");
}

#[test]
fn sdk_viewer_waits_for_the_publisher_with_unknown_stream_wait() {
    let _one = serial();
    if netns::reexec("sdk_viewer_waits_for_the_publisher_with_unknown_stream_wait") {
        return;
    }
    let name = "sdkplay4";
    let server = Server::start(&["--unknown-stream", "wait"]);
    let run = run_page(Page::TwoWay, server.http_port, name, None, &["connect", "play-nowait", "idle:2", "publish", "wait-play:PLAYING:15", "measure:4"], RUN_TIMEOUT, |_| {});
    let ctx = context(&run, &server);
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; {ctx}", run.aborted());
    let seq = run.play_statuses();
    assert_eq!(seq.first().map(String::as_str), Some("PLAYING"), "the waiting viewer plays once the stream is published; {ctx}");
    // In the order the page's signaling saw them (its status elements are read one after
    // the other, so their times cannot order two events of one instant).
    let at = |pred: &dyn Fn(&serde_json::Value) -> bool| run.lines.iter().position(|l| l.get("ws").is_some_and(pred));
    let ids = run.play_session_ids();
    let published = at(&|w| w["dir"] == "out" && w["message"] == "publishStream").unwrap_or_else(|| panic!("no publishStream; {ctx}"));
    let playing = at(&|w| w["dir"] == "in" && w["message"] == "notifyStreamStatusEvent" && w["data"][0]["status"] == "PLAYING" && ids.iter().any(|id| w["data"][0]["mediaSessionId"] == id.as_str()))
        .unwrap_or_else(|| panic!("no PLAYING event; {ctx}"));
    assert!(playing > published, "PLAYING only once the stream is published; {ctx}");
    let w = media_window(&run, 1.0).unwrap_or_else(|| panic!("no decoded video; {ctx}"));
    eprintln!("{}", w.describe());
    let sent = w.frames_sent.unwrap_or(0.0);
    assert!(w.frames_decoded >= MIN_RATIO * sent && sent > 0.0, "the late viewer decodes what is sent: {}", w.describe());
}
