//! RTMP push (issue 11) staying up, black-box against the `rtcbridge` binary:
//! - the destination (`ffmpeg -listen 1`, and nginx-rtmp) is killed mid-stream and started
//!   again on the same port 3 s later: the push is back ("pushing", reconnects ≥ 1) within
//!   5 s of the destination listening again; what the new connection delivers starts with
//!   sequence headers and a keyframe, decodes with zero errors, its timestamps increase
//!   and continue from before (never stepping back); a player of our own stream sees no
//!   gap meanwhile;
//! - a recording destination that closes the connection gets, on the next connection,
//!   onMetaData and the sequence headers first, a keyframe first, timestamps continuing;
//! - a destination that stops reading: our two other players keep ≥ 90% of their frames,
//!   our RSS stays bounded, and the API shows the push dropping, then evicted and
//!   reconnecting.
mod common;
#[path = "common/push.rs"]
mod push;

use common::hostile::{peak_rss_kib, reset_peak_rss};
use common::*;
use push::*;
use serde_json::Value;
use std::thread;
use std::time::{Duration, Instant};

const NAME: &str = "restream";
/// How long the destination stays down.
const DOWN: Duration = Duration::from_secs(3);
/// The push must be back this soon after the destination listens again (backoff 1 s
/// doubling: after ~3 s down the next attempt is at most ~4 s away).
const BACK_WITHIN: Duration = Duration::from_secs(5);
/// A player of our stream may not go this long without a video frame.
const MAX_GAP: Duration = Duration::from_millis(500);

fn pushing(p: &Value) -> bool {
    state(p) == "pushing" && num(p, "frames") > 0
}

/// Asserts the player of our stream got its frames steadily in [from, to].
fn assert_no_gap(player: &ArrivalPlayer, from: Instant, to: Instant, during: &str) {
    let (gap, media_gap) = player.max_gaps(from, to);
    let secs = to.duration_since(from).as_secs_f64();
    let frames = player.frames_between(from, to);
    eprintln!("{}: {frames} video frames in {secs:.1} s {during}; longest wait {gap:?}, largest pts step {media_gap:.3} s", player.label);
    assert!(gap <= MAX_GAP, "{}: {gap:?} without a video frame {during}", player.label);
    assert!(media_gap < MAX_GAP.as_secs_f64(), "{}: a {media_gap:.3} s step in video pts {during}", player.label);
    assert!(frames >= min_video_frames(secs, 0.9), "{}: {frames} video frames in {secs:.1} s {during}", player.label);
    assert!(player.non_monotonic().is_none(), "{}: video pts not increasing: {:?}", player.label, player.non_monotonic());
}

#[test]
fn ffmpeg_destination_killed_and_started_again() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 1500);
    server.wait_stream_live(NAME, Duration::from_secs(15));
    let player = ArrivalPlayer::start("player of our stream", &server.rtmp_url(NAME));
    player.wait_frames(15, Duration::from_secs(15));

    let port = free_port();
    let mut dest1 = ListenDest::start(port, "key");
    let id = start_push(&server, NAME, &dest1.url("key"));
    wait_push(&server, &id, Duration::from_secs(10), "pushing to ffmpeg -listen", pushing);
    thread::sleep(Duration::from_secs(3)); // the first destination records 3 s

    // Crash the destination.
    let t_kill = Instant::now();
    dest1.kill();
    let down = wait_push(&server, &id, Duration::from_secs(5), "noticing the destination is gone", |p| state(p) != "pushing");
    eprintln!("after the kill: {down}");
    assert!(
        matches!(state(&down), "retrying" | "connecting"),
        "a push whose destination died is retrying or connecting: {down}"
    );

    // Start it again on the same port 3 s later.
    sleep_until(t_kill + DOWN);
    let mut dest2 = ListenDest::start(port, "key");
    let listening = dest2.listening_at;
    let left = BACK_WITHIN.saturating_sub(listening.elapsed());
    let back = wait_push(&server, &id, left, "pushing again (reconnects >= 1) within 5 s of the destination listening", |p| {
        pushing(p) && num(p, "reconnects") >= 1
    });
    let t_back = Instant::now();
    eprintln!("push back {:?} after the destination listened again: {back}", t_back.duration_since(listening));

    // Let the new destination record, then end the push: ffmpeg finishes its file.
    thread::sleep(Duration::from_secs(5));
    let p = get_push(&server, &id);
    assert_eq!(state(&p), "pushing", "the push stays up on the new destination: {p}");
    let t_end_of_watch = Instant::now();
    // Our own player did not notice.
    assert_no_gap(&player, t_kill - Duration::from_secs(1), t_back + Duration::from_secs(2), "while the destination was down and the push came back");
    let (status, v) = delete_push(&server, &id);
    assert_eq!(status, 200, "DELETE: {v}");
    let recorded = t_end_of_watch.duration_since(t_back).as_secs_f64();
    dest2.wait_exit(Duration::from_secs(10));

    // What the new connection delivered.
    let rec2 = analyze(&dest2.out, true);
    let label = "the restarted destination's recording";
    rec2.assert_h264_aac(label);
    rec2.assert_starts_on_keyframe(label);
    rec2.assert_monotonic(label);
    rec2.assert_decodes_clean(label, min_video_frames(recorded - 1.0, 0.9), min_audio_frames(recorded - 1.0, 0.9));

    // Timestamps continue across the reconnect (the first recording was cut by SIGKILL:
    // its last readable packet is a lower bound of what was sent).
    let rec1 = analyze(&dest1.out, false);
    let (first1, last1) = (rec1.first_dts().unwrap_or(f64::NAN), rec1.last_dts().unwrap_or(f64::NAN));
    let first2 = rec2.first_dts().unwrap_or(f64::NAN);
    eprintln!("timestamps: first connection {first1:.3}..{last1:.3} s, second from {first2:.3} s");
    assert!(first1.abs() < 0.5, "the first connection's timestamps start at {first1:.3} s, not at 0");
    assert!(
        first2 >= last1,
        "timestamps stepped back across the reconnect: the first connection reached {last1:.3} s, the second starts at {first2:.3} s"
    );
    let complaints = timestamp_complaints(&dest2.log());
    assert!(complaints.is_empty(), "the restarted destination complained about timestamps: {complaints:?}");
    // Last: only the audio and the video stream (checked after the rest so that a
    // failure here says that everything above held).
    rec1.assert_only_audio_video("the first destination's recording");
    rec2.assert_only_audio_video(label);

    let errors = player.stop();
    assert!(errors.is_empty(), "player of our stream: decode errors {errors:?}");
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
}

#[test]
fn nginx_destination_killed_and_started_again() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 1500);
    server.wait_stream_live(NAME, Duration::from_secs(15));
    let player = ArrivalPlayer::start("player of our stream", &server.rtmp_url(NAME));
    player.wait_frames(15, Duration::from_secs(15));

    let mut nginx = NginxAt::start(free_port());
    let id = start_push(&server, NAME, &nginx.url("key"));
    wait_push(&server, &id, Duration::from_secs(10), "pushing to nginx-rtmp", pushing);
    thread::sleep(Duration::from_secs(2));

    let t_kill = Instant::now();
    nginx.kill();
    let down = wait_push(&server, &id, Duration::from_secs(5), "noticing nginx is gone", |p| state(p) != "pushing");
    eprintln!("after the kill: {down}");

    sleep_until(t_kill + DOWN);
    let listening = nginx.launch();
    let left = BACK_WITHIN.saturating_sub(listening.elapsed());
    let back = wait_push(&server, &id, left, "pushing again (reconnects >= 1) within 5 s of nginx listening", |p| {
        pushing(p) && num(p, "reconnects") >= 1
    });
    let t_back = Instant::now();
    eprintln!("push back {:?} after nginx listened again: {back}", t_back.duration_since(listening));

    // nginx serves the pushed stream again: a player of nginx decodes it cleanly.
    const WINDOW: f64 = 5.0;
    let via_nginx = FramePlayer::start("player of nginx after its restart", &nginx.url("key"), WINDOW);
    let r = via_nginx.finish(Duration::from_secs(20));
    if !r.errors.is_empty() || r.video_count() < min_video_frames(WINDOW, 0.9) {
        eprintln!("nginx error.log tail:\n{}", tail(&nginx.error_log(), 30));
    }
    r.assert_healthy(min_video_frames(WINDOW, 0.9), min_audio_frames(WINDOW, 0.9), true);
    let p = get_push(&server, &id);
    assert_eq!(state(&p), "pushing", "{p}");

    assert_no_gap(&player, t_kill - Duration::from_secs(1), t_back + Duration::from_secs(2), "while nginx was down and the push came back");
    let (status, v) = delete_push(&server, &id);
    assert_eq!(status, 200, "DELETE: {v}");
    let errors = player.stop();
    assert!(errors.is_empty(), "player of our stream: decode errors {errors:?}");
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
}

/// Checks one recorded connection: onMetaData, sequence headers first, first frame a
/// keyframe, timestamps increasing per kind. Returns (first, last) frame timestamps.
fn check_connection(c: &FakeConn, label: &str) -> (u32, u32) {
    let frames: Vec<&Got> = c.messages.iter().filter(|m| m.is_video() || m.is_audio()).collect();
    let describe = || {
        c.messages
            .iter()
            .take(8)
            .map(|m| format!("type {} ts {} head {:02x?} {}", m.type_id, m.ts, m.head, m.data_name))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let first_video = c.messages.iter().position(|m| m.is_video());
    let first_audio = c.messages.iter().position(|m| m.is_audio());
    let (Some(v0), Some(a0)) = (first_video, first_audio) else {
        panic!("{label}: no video or no audio: {}", describe());
    };
    assert!(c.messages[v0].is_avc_header(), "{label}: the first video message is not the AVC sequence header: {}", describe());
    assert!(c.messages[a0].is_aac_header(), "{label}: the first audio message is not the AAC sequence header: {}", describe());
    let first_frame = frames
        .iter()
        .position(|m| !m.is_avc_header() && !m.is_aac_header())
        .unwrap_or_else(|| panic!("{label}: headers only: {}", describe()));
    let first_video_frame = c.messages.iter().find(|m| m.is_video() && !m.is_avc_header()).expect("a video frame");
    assert!(first_video_frame.is_keyframe(), "{label}: the first video frame is not a keyframe: {}", describe());
    let meta = c.messages.iter().position(|m| m.type_id == 18 && m.data_name == "onMetaData");
    let first_frame_idx = c.messages.iter().position(|m| std::ptr::eq(m, frames[first_frame])).unwrap();
    assert!(
        matches!(meta, Some(i) if i < first_frame_idx),
        "{label}: no onMetaData before the first frame: {}",
        describe()
    );
    if let Some(i) = meta {
        eprintln!("{label}: onMetaData at ts {} ms, first frame at ts {} ms", c.messages[i].ts, frames[first_frame].ts);
    }
    for kind in [8u8, 9] {
        let ts: Vec<u32> = c.messages.iter().filter(|m| m.type_id == kind && !m.is_avc_header() && !m.is_aac_header()).map(|m| m.ts).collect();
        if let Some(i) = ts.windows(2).position(|w| w[1] <= w[0]) {
            panic!("{label}: type {kind} timestamps not increasing at frame {}: {} then {}", i + 1, ts[i], ts[i + 1]);
        }
    }
    let first = frames[first_frame].ts;
    let last = frames.iter().map(|m| m.ts).max().unwrap_or(0);
    (first, last)
}

#[test]
fn closing_destination_gets_headers_first_and_continuing_timestamps() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 800);
    server.wait_stream_live(NAME, Duration::from_secs(15));

    let fake = FakeDest::start(FakeMode::Record);
    let id = start_push(&server, NAME, &fake.url("live", "key"));
    wait_push(&server, &id, Duration::from_secs(10), "pushing to the recording destination", pushing);
    let video_of = |i: usize| fake.conns().get(i).map(|c| c.messages.iter().filter(|m| m.is_video()).count()).unwrap_or(0);
    wait_for(Duration::from_secs(10), "90 video messages on the first connection", || video_of(0) >= 90);

    // The destination goes away (closes the connection); the push comes back on its own.
    fake.close_open_connections();
    wait_for(Duration::from_secs(5), "the fake to close its connection", || fake.conns()[0].closed.is_some());
    let back = wait_push(&server, &id, Duration::from_secs(6), "pushing again after the destination closed", |p| {
        pushing(p) && num(p, "reconnects") >= 1
    });
    eprintln!("back: {back}");
    wait_for(Duration::from_secs(10), "90 video messages on the second connection", || video_of(1) >= 90);
    let (status, v) = delete_push(&server, &id);
    assert_eq!(status, 200, "DELETE: {v}");

    let conns = fake.conns();
    assert!(conns.len() >= 2, "{}", fake.describe());
    let tc = format!("rtmp://127.0.0.1:{}/live", fake.port);
    for (i, c) in conns.iter().take(2).enumerate() {
        assert_eq!(c.app.as_deref(), Some("live"), "connection {i}: connect app: {}", fake.describe());
        assert_eq!(c.tc_url.as_deref(), Some(tc.as_str()), "connection {i}: tcUrl: {}", fake.describe());
        assert_eq!(c.publish_name.as_deref(), Some("key"), "connection {i}: publish name: {}", fake.describe());
    }
    let (first0, last0) = check_connection(&conns[0], "first connection");
    let (first1, _) = check_connection(&conns[1], "connection after the destination closed");
    eprintln!("timestamps: first connection {first0}..{last0} ms, second from {first1} ms");
    assert!(first0 < 500, "the first connection's timestamps start at {first0} ms, not at 0");
    assert!(first1 >= last0, "timestamps stepped back across the reconnect: {last0} ms, then {first1} ms");
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
}

#[test]
fn destination_that_stops_reading_is_dropped_to_then_evicted_and_reconnected() {
    const WINDOW: Duration = Duration::from_secs(10);
    const RSS_LIMIT_KIB: u64 = 200 * 1024;
    let server = Server::start(&["--player-queue-kb", "256", "--evict-after", "3"]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 2500);
    server.wait_stream_live(NAME, Duration::from_secs(15));
    let players = [
        ArrivalPlayer::start("player 1 of our stream", &server.rtmp_url(NAME)),
        ArrivalPlayer::start("player 2 of our stream", &server.rtmp_url(NAME)),
    ];
    for p in &players {
        p.wait_frames(15, Duration::from_secs(15));
    }

    let pid = server.pid();
    reset_peak_rss(pid);
    let fake = FakeDest::start(FakeMode::Stall);
    let id = start_push(&server, NAME, &fake.url("live", "key"));
    wait_for(Duration::from_secs(10), "the stalling destination to accept the publish", || fake.published_count() >= 1);
    let t0 = Instant::now();

    let mut max_rss = server.rss_kib();
    let mut dropping: Option<(Duration, Value)> = None;
    let mut evicted: Option<(Duration, Value)> = None;
    let mut states: Vec<String> = Vec::new();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let p = get_push(&server, &id);
        max_rss = max_rss.max(server.rss_kib());
        let s = format!("{} drops={} reconnects={} err={:?}", state(&p), num(&p, "drops"), num(&p, "reconnects"), last_error(&p));
        if states.last() != Some(&s) {
            states.push(s);
        }
        if dropping.is_none() && num(&p, "drops") > 0 {
            dropping = Some((t0.elapsed(), p.clone()));
        }
        if evicted.is_none() && num(&p, "reconnects") >= 1 && last_error(&p).contains("evicted") {
            evicted = Some((t0.elapsed(), p.clone()));
        }
        if evicted.is_some() && t0.elapsed() >= WINDOW && fake.conn_count() >= 2 {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let t_end = Instant::now();
    let m = server.metrics();
    let peak = peak_rss_kib(pid);
    eprintln!("push states: {states:?}");
    eprintln!("dropping: {dropping:?}\nevicted: {evicted:?}\nRSS max {max_rss} KiB, peak {peak} KiB; fake: {}", fake.describe());

    // Our players were not held back by the stalled push.
    for p in &players {
        let frames = p.frames_between(t0, t0 + WINDOW);
        assert!(
            frames >= min_video_frames(WINDOW.as_secs_f64(), 0.9),
            "{}: {frames} video frames in the {WINDOW:?} after the destination stopped reading",
            p.label
        );
        assert!(p.errors().is_empty(), "{}: decode errors {:?}", p.label, p.errors());
    }
    assert!(max_rss.max(peak) < RSS_LIMIT_KIB, "server RSS reached {} KiB with a stalled push (limit {RSS_LIMIT_KIB})", max_rss.max(peak));

    let (t_drop, _) = dropping.unwrap_or_else(|| {
        panic!(
            "the push never showed drops > 0 in {:?} with a destination that stopped reading; states {states:?}; log:\n{}",
            t_end.duration_since(t0),
            tail(&server.log(), 30)
        )
    });
    let (t_evict, pe) = evicted.unwrap_or_else(|| {
        panic!(
            "the push was never evicted and reconnecting (reconnects >= 1, last_error naming \"evicted\") in {:?}; states {states:?}; log:\n{}",
            t_end.duration_since(t0),
            tail(&server.log(), 30)
        )
    });
    assert!(t_drop <= t_evict, "drops showed after the eviction ({t_drop:?} vs {t_evict:?})");
    assert!(matches!(state(&pe), "retrying" | "connecting" | "pushing"), "an evicted push reconnects: {pe}");
    assert!(fake.conn_count() >= 2, "the push did not connect again after its eviction: {}", fake.describe());
    assert!(m.sum("rtcbridge_push_drops_total") > 0.0, "push drops in /metrics:\n{}", m.text);
    assert!(m.sum("rtcbridge_push_reconnects_total") >= 1.0, "push reconnects in /metrics:\n{}", m.text);
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains(&id) && l.contains("failed") && l.contains("evicted")),
        "no log line \"push {id} ...: failed: ...evicted...\":\n{}",
        tail(&log, 30)
    );

    let (status, v) = delete_push(&server, &id);
    assert_eq!(status, 200, "DELETE: {v}");
    for p in players {
        let label = p.label.clone();
        let errors = p.stop();
        assert!(errors.is_empty(), "{label}: decode errors {errors:?}");
    }
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
}
