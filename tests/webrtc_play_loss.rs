//! WebRTC playback through a lossy, reordering path: the viewer recovers what is lost by
//! NACK, the server answers them, and the picture keeps moving.
//!
//! ffmpeg publishes testsrc2 640x360 at 30 fps (H.264, no B-frames) plus AAC over RTMP;
//! headless Chromium plays the stream in the Flashphoner Web SDK's Player example page
//! (tests/js/play.mjs, as tests/webrtc_play_rtmp.rs does). Everything runs in a
//! loopback-only network namespace the test creates (TESTING.md; this kernel has no netem).
//! The server announces a UDP relay in this process as its only ICE candidate
//! (`--public-ip 127.0.0.1 --candidate-port RELAY`), so all media goes
//! Chromium ⇄ relay ⇄ rtcbridge (tests/common/play_loss.rs):
//! - the relay holds back 5 % of the server's RTP packets for 20-40 ms, so later packets
//!   overtake them (reordering);
//! - an nftables `numgen random` rule drops 2 % of the RTP packets the relay sends on to the
//!   browser (retransmissions included); STUN, DTLS and RTCP pass;
//! - the browser's RTCP (NACK, PLI, receiver reports) reaches the server unimpaired.
//!
//! What must hold over a ~15 s getStats() window (one sample a second):
//! - the Player page shows PLAYING (and STOPPED after Stop);
//! - inbound-rtp video framesDecoded >= 80 % of 30 fps;
//! - freezeCount stays low: at most [`MAX_FREEZES`] over the whole play;
//! - within the window Chromium sent NACKs (nackCount grew) and the server answered them
//!   (/api/streams `playback.retransmits` grew; on a clean path both stay flat there, as
//!   only the NACK right after joining causes retransmits), and /metrics
//!   `rtcbridge_rtp_retransmits_total{stream=...}` agrees with /api/streams;
//! - the impairments really happened: the nftables rule dropped packets and the relay
//!   reordered some (so the test cannot pass on a clean path).
//!
//! Calibration (2-core machine shared with builds, release build, a 15.5 s window):
//! - without loss or reordering (`RTCBRIDGE_PLAY_LOSS_CLEAN=1`, through the same relay):
//!   29.9 fps decoded, freezeCount 0, nackCount 1 (only the NACK right after joining: ~110
//!   retransmits then, 0 in the window), no frames dropped by the server;
//! - with 2 % loss + 5 % reordering: 29.8-29.9 fps, freezeCount 0, nackCount ~150 in
//!   the window, ~170 retransmits in the window, nft dropped 73-87, relay reordered ~200;
//! - with the same impairments on the server before 61b795c, whose viewers were marked
//!   congested by a single receiver report (its fraction lost covers only the handful of
//!   packets since the report before it: 1/3 reads 33 %): 14-17 fps, freezeCount 5-7,
//!   the relay dropping inter frames until each next keyframe. This test failed there.
//!   [`MAX_FREEZES`] = 3 leaves room above the 0 seen.
//!
//! `RTCBRIDGE_PLAY_LOSS_CLEAN=1` is only for measuring that baseline: it turns the
//! impairments off and, loudly, the assertions that need them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/lossy.rs"]
mod lossy;
#[path = "common/play.rs"]
mod play;
#[path = "common/play_loss.rs"]
mod play_loss;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{netns, tail, Publisher, Server};
use lossy::NftLoss;
use play::{media_window, playback_counter, run_page, serial, Page, PageRun};
use play_loss::{changes, poll_once, poll_server, DownRelay, DownRelayConfig, DownStats, ServerPoll};
use serde_json::Value;

const NAME: &str = "playloss1";
/// The frame rate ffmpeg publishes.
const SOURCE_FPS: f64 = 30.0;
/// getStats() samples after the first decoded frame: MEASURE_SECS + 1, one a second; the
/// window leaves out the first second (decoder start).
const MEASURE_SECS: u32 = 16;
const MIN_RATIO: f64 = 0.8;
/// freezeCount (cumulative, over the whole play) at most this.
const MAX_FREEZES: f64 = 3.0;
const LOSS_PERCENT: u32 = 2;
const HOLD_PER_MILLE: u64 = 50;
const HOLD_MS: (u64, u64) = (20, 40);
const RUN_TIMEOUT: Duration = Duration::from_secs(45);
const BOUND: Duration = Duration::from_secs(60);

fn clean_mode() -> bool {
    std::env::var_os("RTCBRIDGE_PLAY_LOSS_CLEAN").is_some_and(|v| !v.is_empty() && v != "0")
}

fn v(s: &Value, kind: &str, key: &str) -> f64 {
    s[kind][key].as_f64().unwrap_or(0.0)
}

#[test]
fn sdk_player_recovers_from_loss_and_reordering() {
    let _one = serial();
    if netns::reexec("sdk_player_recovers_from_loss_and_reordering") {
        return;
    }
    let t0 = Instant::now();
    let clean = clean_mode();
    if clean {
        eprintln!("RTCBRIDGE_PLAY_LOSS_CLEAN set: BASELINE RUN, no loss and no reordering; the impairment and NACK assertions are OFF");
    }
    let (loss_percent, hold_per_mille) = if clean { (0, 0) } else { (LOSS_PERCENT, HOLD_PER_MILLE) };

    // The relay first: the server must announce its port.
    let relay_sock = DownRelay::bind();
    let relay_port = relay_sock.local_addr().unwrap().port();
    let relay_port_arg = relay_port.to_string();
    let server = Server::start(&["--public-ip", "127.0.0.1", "--candidate-port", &relay_port_arg]);
    let publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 1000);
    server.wait_stream_live(NAME, Duration::from_secs(10));

    let loss = (loss_percent > 0).then(|| NftLoss::install_from(relay_port, loss_percent));
    let seed = lossy::time_seed();
    let relay = DownRelay::start(
        relay_sock,
        DownRelayConfig { server: SocketAddr::from(([127, 0, 0, 1], server.udp_port)), hold_per_mille, hold_ms: HOLD_MS, seed },
    );
    eprintln!(
        "play loss test: server udp {} announced as relay 127.0.0.1:{relay_port}; nft drops {loss_percent}% of the RTP the relay \
         sends to the browser; the relay holds {hold_per_mille}‰ of the server's RTP for {}-{} ms (seed {seed:#x})",
        server.udp_port, HOLD_MS.0, HOLD_MS.1
    );

    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_server(server.http_port, NAME, stop.clone());
    // The server's retransmit counter at each getStats() sample, to count what it sent
    // within the measured window only (a viewer's first NACK, right after it joins, names
    // the packets of the joining burst it missed: retransmits even on a clean path).
    let mut retransmits_at: Vec<(f64, u64)> = Vec::new();
    let run = run_page(Page::Player, server.http_port, NAME, None, &["play", &format!("measure:{MEASURE_SECS}"), "stop-play"], RUN_TIMEOUT, |line| {
        if let (Some(t), Some(_)) = (line["t"].as_f64(), line.get("stats")) {
            let r = server.stream(NAME).and_then(|s| playback_counter(&s, "retransmits")).unwrap_or(0);
            retransmits_at.push((t / 1000.0, r));
        }
    });
    stop.store(true, Ordering::SeqCst);
    let mut polls: Vec<ServerPoll> = poller.join().expect("server poller");
    let t_last = polls.last().map_or(0.0, |p| p.t + 0.25);
    polls.push(poll_once(server.http_port, NAME, t_last));
    let metric_retransmits = server.metrics().sum_where("rtcbridge_rtp_retransmits_total", &[("stream", NAME)]);
    let dropped = loss.as_ref().map_or(0, NftLoss::dropped);
    let listing = loss.as_ref().map_or(String::new(), NftLoss::listing);
    let st = &relay.stats;
    let g = DownStats::get;
    let ctx = context(&run, &server, &publisher, &relay);

    // The counters: the last /api/streams view (after Stop the stream and its counters stay).
    let counter = |key: &str| -> u64 { polls.iter().filter_map(|p| playback_counter(p.stream.as_ref()?, key)).max().unwrap_or(0) };
    let retransmits = counter("retransmits");
    let plis_received = counter("plis_received");
    let rtp_out = counter("rtp_packets_out");
    let viewer_loss_max = polls.iter().filter_map(|p| p.playback("viewer_loss_percent")).fold(0.0_f64, f64::max);
    let drops = polls.last().map_or((0, 0, 0), |p| (p.drops_inter, p.drops_keyframe, p.drops_audio));

    let w = media_window(&run, 1.0);
    let last = run.stats().last().map(|(_, s)| s.clone()).unwrap_or(Value::Null);
    let freezes = v(&last, "video", "freezeCount");
    let freezes_window = w.as_ref().map_or(0.0, |w| v(&w.last, "video", "freezeCount") - v(&w.first, "video", "freezeCount"));
    let nacks = v(&last, "video", "nackCount");
    let nacks_window = w.as_ref().map_or(0.0, |w| v(&w.last, "video", "nackCount") - v(&w.first, "video", "nackCount"));
    // Server retransmits between the window's first and last samples (the page's clock).
    let retransmits_window = w.as_ref().map_or(0, |w| {
        let t_first = run.stats().into_iter().find(|(_, s)| *s == w.first).map_or(0.0, |(t, _)| t);
        let at = |t: f64| retransmits_at.iter().find(|(ts, _)| (*ts - t).abs() < 0.01).map_or(0, |(_, r)| *r);
        at(t_first + w.secs).saturating_sub(at(t_first))
    });
    let plis = v(&last, "video", "pliCount");
    let lost = v(&last, "video", "packetsLost");
    let received = v(&last, "video", "packetsReceived");
    eprintln!(
        "play loss numbers{}: window {:.1} s, framesDecoded {} ({:.1} fps), freezeCount {freezes} ({freezes_window} in the window), \
         framesDropped {}, video packetsReceived {received} packetsLost {lost} nackCount {nacks} ({nacks_window} in the window) pliCount {plis}, audio concealed {:.1} % | \
         server: rtp_packets_out {rtp_out} retransmits {retransmits} ({retransmits_window} in the window; /metrics {metric_retransmits}) plis_received {plis_received} \
         viewer_loss_percent max {viewer_loss_max:.1}, frames the relay dropped for slow sinks (inter, keyframe, audio) {drops:?} \
         | nft dropped {dropped} | relay: {} | total {:.1} s",
        if clean { " (BASELINE, no impairments)" } else { "" },
        w.as_ref().map_or(0.0, |w| w.secs),
        w.as_ref().map_or(0.0, |w| w.frames_decoded),
        w.as_ref().map_or(0.0, |w| w.decoded_fps()),
        v(&last, "video", "framesDropped"),
        w.as_ref().map_or(0.0, |w| w.concealed_ratio() * 100.0),
        st.summary(),
        t0.elapsed().as_secs_f64()
    );
    let page_series: Vec<String> = run
        .stats()
        .iter()
        .map(|(t, s)| format!("{t:.1}s:{}/{}/{}", v(s, "video", "framesDecoded"), v(s, "video", "freezeCount"), v(s, "video", "keyFramesDecoded")))
        .collect();
    eprintln!("page, framesDecoded/freezeCount/keyFramesDecoded: {}", page_series.join(" "));
    eprintln!("server, playback.viewer_loss_percent: {}", changes(&polls, |p| p.playback("viewer_loss_percent")));
    eprintln!("server, rtcbridge_drops_total{{reason=\"inter\"}}: {}", changes(&polls, |p| Some(p.drops_inter as f64)));
    eprintln!("server, playback.retransmits: {}", changes(&polls, |p| p.playback("retransmits")));

    // The page played, and stopped when asked.
    assert!(run.aborted().is_none(), "every step reached its condition: {:?}; {ctx}", run.aborted());
    let seq: Vec<String> = run.play_statuses().into_iter().filter(|s| s != "ESTABLISHED").collect();
    assert_eq!(seq, ["PLAYING", "STOPPED"], "#status: PLAYING, then STOPPED after Stop; {ctx}");
    // All of its media went through the relay (its only candidate).
    assert!(g(&st.peers) >= 1 && g(&st.down_rtp) > 0 && g(&st.up_rtcp) > 0, "the viewer's media did not go through the relay: {}", st.summary());

    // Video kept moving.
    let w = w.unwrap_or_else(|| panic!("no window of getStats() samples with decoded video; {ctx}"));
    eprintln!("{}", w.describe());
    assert!(w.secs >= f64::from(MEASURE_SECS) - 2.0, "the window is {:.1} s, asked {MEASURE_SECS}: {}\n{ctx}", w.secs, w.describe());
    let want = MIN_RATIO * SOURCE_FPS * w.secs;
    assert!(
        w.frames_decoded >= want,
        "Chromium decoded {} frames in {:.1} s under loss, want >= {want:.0} ({:.0} % of {SOURCE_FPS} fps): {}\n{ctx}",
        w.frames_decoded,
        w.secs,
        MIN_RATIO * 100.0,
        w.describe()
    );
    assert_eq!(w.last["video"]["codec"].as_str(), Some("video/H264"), "H.264 to the browser: {}", w.describe());
    assert!(freezes <= MAX_FREEZES, "freezeCount {freezes} over the play (> {MAX_FREEZES}): {}\n{ctx}", w.describe());

    if clean {
        eprintln!("BASELINE RUN: impairment and NACK assertions not checked (unset RTCBRIDGE_PLAY_LOSS_CLEAN for the real test)");
    } else {
        // The impairments really happened.
        assert!(dropped > 0, "nftables dropped nothing:\n{listing}\nrelay: {}", st.summary());
        assert_eq!(g(&st.down_refused), dropped, "the relay's refused sends are the rule's drops:\n{listing}\nrelay: {}", st.summary());
        assert!(g(&st.reordered) > 0, "the relay reordered no RTP packet: {}", st.summary());
        // NACKs sent and answered within the window (not only the one after joining).
        assert!(nacks_window > 0.0, "Chromium sent no NACK in the window under {LOSS_PERCENT}% loss: last sample {last}\n{ctx}");
        assert!(
            retransmits_window > 0,
            "the server retransmitted nothing in the window for the viewer's NACKs (/api/streams playback.retransmits at each sample {retransmits_at:?})\n{ctx}"
        );
        assert_eq!(metric_retransmits as u64, retransmits, "/metrics rtcbridge_rtp_retransmits_total{{stream=\"{NAME}\"}} and /api/streams agree");
    }
    drop(loss);
    drop(relay);
    let elapsed = t0.elapsed();
    assert!(elapsed < BOUND, "took {elapsed:?} (bound: {BOUND:?})");
}

fn context(run: &PageRun, server: &Server, publisher: &Publisher, relay: &DownRelay) -> String {
    format!(
        "#status {:?}, #info {:?}, play stream events {:?}\nrelay: {}\ndriver output:\n{}\nffmpeg publisher log:\n{}\nserver log tail:\n{}",
        run.play_statuses(),
        run.statuses("#info"),
        run.play_event_summary(),
        relay.stats.summary(),
        run.brief(),
        tail(&publisher.log(), 10),
        tail(&server.log(), 30)
    )
}
