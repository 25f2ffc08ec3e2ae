//! Cluster mode (issue 13), black-box: a `redis-server` the test starts on a free loopback
//! port and three `rtcbridge` nodes A, B, C joined to it (`--cluster redis://127.0.0.1:P
//! --workers 2`, each on its own RTMP/HTTP/UDP ports; a node's URL is its `--rtmp`).
//! Contract: /work/cluster-contract.md (README "Cluster").
//!
//! a. The Flashphoner Web SDK's Two Way Streaming page (headless Chromium, in a loopback-only
//!    network namespace with Redis, the nodes and the players) publishes on A; two ffprobe
//!    players on B and one on C decode a 10 s window each: at least 90% of the video frames
//!    the browser really sends (its getStats() framesSent rate, publish.mjs --media-stats) and
//!    of the AAC frames, zero decode errors, first video packet and frame a keyframe, pts
//!    increasing. B's /metrics shows exactly one pull (`rtcbridge_cluster_pulls` summed) while
//!    its two players play, C's one; B's /api/streams lists the stream as source "pull";
//!    GET /api/cluster on A, B and C lists the stream owned by A (its id and URL) and three
//!    live nodes; an ffmpeg publish of the same name on C meanwhile is refused.
//! b. An ffmpeg RTMP publish of a name A owns, on C: ffmpeg fails with "already being
//!    published", the hand-written RTMP client gets NetStream.Publish.BadName "NAME is already
//!    being published."; the directory still names A and C's players still get A's stream.
//! c. A is killed (SIGKILL) while hand-written RTMP clients on B and C play its stream
//!    (ffmpeg publisher on A, `--unpublish-grace 4`, default lease 5 s): both get
//!    NetStream.Play.UnpublishNotify no sooner than the grace window and no later than
//!    grace + lease + 1 s after the kill, their connection open until then; B's directory
//!    drops the stream and A within lease + 1 s. Separately: the publisher republishes on B
//!    1 s after the kill: the players on B and C get frames again within 3 s of the
//!    republish, starting with fresh AVC and AAC sequence headers and a keyframe, no
//!    UnpublishNotify until grace + lease + 1 s after the kill, and the timestamps each
//!    saw never step back (per track, over the whole session).
//! d. Redis is killed for 10 s and started again on the same port (empty): a local player on
//!    A and the existing pull's player on B never go more than 1 s without a video frame;
//!    during the outage every node logs the outage at most once a second, and a new RTMP play
//!    on C of a name not live on C gets NetStream.Play.Failed with the reason; after the
//!    restart, `redis-cli KEYS rtcbridge:*` shows the stream and all three nodes again within
//!    lease + 1 s, and a new player on C of A's stream plays (keyframe first).
//!
//! One at a time (a mutex: the frame counts are about the nodes, not about two clusters
//! sharing two cores); every child (redis-server, nodes, ffmpeg, ffprobe, Chromium) is ended
//! when its guard drops, pass or fail.
mod common;
#[path = "common/cluster.rs"]
mod cluster;

use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use cluster::*;
use common::browser::{run_browser_at, status_seq};
use common::*;
use serde_json::Value;

/// The players' window (stream time).
const WINDOW: f64 = 10.0;
/// Share of the window's frames each player must decode.
const MIN_RATIO: f64 = 0.9;
/// How long the browser keeps publishing after PUBLISHING.
const PUBLISH_SECS: u32 = 26;
/// `--unpublish-grace` of the failure tests.
const GRACE: Duration = Duration::from_secs(4);
/// The default `--cluster-lease`.
const LEASE: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(1);
const UNPUBLISH_NOTIFY: &str = "NetStream.Play.UnpublishNotify";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Redis and nodes A, B, C. Fields drop in order: the nodes first (SIGTERM while Redis
/// still answers, so they leave the directory cleanly), Redis last.
struct Trio {
    a: Server,
    b: Server,
    c: Server,
    redis: Redis,
    id_a: String,
    id_b: String,
}

impl Trio {
    fn start(extra: &[&str]) -> Trio {
        let redis = Redis::start();
        let a = start_node(&redis, extra);
        let b = start_node(&redis, extra);
        let c = start_node(&redis, extra);
        wait_alive(&[&a, &b, &c], 3, Duration::from_secs(5));
        let (id_a, id_b) = (node_id(&a), node_id(&b));
        eprintln!("cluster: redis {} A {} (rtmp {}) B {} (rtmp {}) C {} (rtmp {})", redis.port, id_a, a.rtmp_port, id_b, b.rtmp_port, node_id(&c), c.rtmp_port);
        Trio { a, b, c, redis, id_a, id_b }
    }

    /// The last lines of every node's log, labelled.
    fn logs(&self, lines: usize) -> String {
        [("A", &self.a), ("B", &self.b), ("C", &self.c)]
            .iter()
            .map(|(l, s)| format!("--- node {l} log ({}):\n{}", s.log_path.display(), tail(&s.log(), lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn panic_message(e: Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_else(|| "panic".into())
}

/// `{"t": ms, "media": {...}}` lines of publish.mjs --media-stats: (seconds, media).
fn media_lines(raw: &str) -> Vec<(f64, Value)> {
    raw.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| Some((v.get("t")?.as_f64()? / 1000.0, v.get("media")?.clone())))
        .collect()
}

/// Per-second rate of counter `key` over the media lines (first to last sample with it).
fn rate_of(media: &[(f64, Value)], key: &str) -> Option<f64> {
    let with: Vec<(f64, f64)> = media.iter().filter_map(|(t, m)| Some((*t, m[key].as_f64()?))).collect();
    let (&(t0, a), &(t1, b)) = (with.first()?, with.last()?);
    (t1 - t0 >= 3.0).then(|| (b - a) / (t1 - t0))
}

// ---------------------------------------------------------------------------
// a. The SDK page publishes on A; players on B (two) and C.
// ---------------------------------------------------------------------------

/// What the checker thread saw while the browser published.
#[derive(Default)]
struct Seen {
    players: Vec<ProbeResult>,
    /// (pulls, players) of B's /metrics, sampled while the players played.
    b_samples: Vec<(f64, f64)>,
    c_max_pulls: f64,
    b_source: Option<String>,
    /// /api/cluster of A, B, C after the window.
    clusters: Vec<(&'static str, Value)>,
    /// try_publish of the same name on C: (succeeded, stderr).
    refused: Option<(bool, String)>,
    /// C's directory entry for the name after the refused publish.
    after_refusal: Option<(String, String)>,
}

fn check_while_publishing(t: &Trio, name: &str) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let live = t.a.stream(name).is_some_and(|s| s["video"]["frames"].as_u64().unwrap_or(0) > 0 && s["audio"]["frames"].as_u64().unwrap_or(0) > 0);
        if live {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("{name} never live with video and audio on A within 45 s: {}", t.a.get("/api/streams").1));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let players = vec![
        ProbePlayer::start("player 1 on B", &t.b.rtmp_url(name), WINDOW),
        ProbePlayer::start("player 2 on B", &t.b.rtmp_url(name), WINDOW),
        ProbePlayer::start("player on C", &t.c.rtmp_url(name), WINDOW),
    ];
    let mut players = players;
    let until = Instant::now() + Duration::from_secs_f64(WINDOW + 20.0);
    while players.iter_mut().any(|p| p.is_running()) && Instant::now() < until {
        let m = t.b.metrics();
        seen.b_samples.push((m.sum("rtcbridge_cluster_pulls"), m.sum("rtcbridge_players")));
        seen.c_max_pulls = seen.c_max_pulls.max(t.c.metrics().sum("rtcbridge_cluster_pulls"));
        if seen.b_source.is_none() {
            seen.b_source = stream_source(&t.b, name);
        }
        thread::sleep(Duration::from_millis(300));
    }
    for p in players {
        seen.players.push(p.finish(Duration::from_secs(5)));
    }
    for (l, s) in [("A", &t.a), ("B", &t.b), ("C", &t.c)] {
        seen.clusters.push((l, cluster_json(s)));
    }
    seen.refused = Some(try_publish(&t.c.rtmp_url(name)));
    seen.after_refusal = directory_entry(&cluster_json(&t.c), name);
    Ok(seen)
}

#[test]
fn sdk_browser_publishes_on_a_players_on_b_and_c_share_one_pull() {
    let _one = serial();
    if netns::reexec("sdk_browser_publishes_on_a_players_on_b_and_c_share_one_pull") {
        return;
    }
    let name = "clusterweb";
    let t = Trio::start(&[]);
    let http = format!("http://127.0.0.1:{}", t.a.http_port);
    let ws = format!("ws://127.0.0.1:{}/", t.a.http_port);
    let (seen, evs, raw) = thread::scope(|scope| {
        let checker = scope.spawn(|| check_while_publishing(&t, name));
        let (evs, raw) = run_browser_at(&http, &ws, &["--media-stats"], "sdk", name, PUBLISH_SECS, |_| {});
        (checker.join().unwrap_or_else(|e| Err(panic_message(e))), evs, raw)
    });
    let seq = status_seq(&evs, "#publishStatus");
    let diag = || format!("publish statuses {seq:?}\n{}", t.logs(30));
    assert!(seq.contains(&"PUBLISHING".to_string()), "the SDK page never showed PUBLISHING on node A\n{raw}\n{}", diag());
    assert!(!seq.contains(&"FAILED".to_string()), "the browser's publish on A FAILED\n{raw}\n{}", diag());
    let seen = seen.unwrap_or_else(|e| panic!("{e}\n{}", diag()));

    // What the browser really sent (getStats() framesSent), and what its camera delivered.
    let media = media_lines(&raw);
    let send_fps = rate_of(&media, "framesSent").unwrap_or_else(|| panic!("publish.mjs --media-stats gave no framesSent counts:\n{raw}"));
    let cam_fps = rate_of(&media, "sourceFrames");
    eprintln!("browser: camera {cam_fps:?} fps, sent {send_fps:.2} fps");
    assert!((5.0..=60.0).contains(&send_fps), "implausible send rate {send_fps} fps");
    let min_v = (send_fps * WINDOW * MIN_RATIO).floor() as usize;
    for p in &seen.players {
        eprintln!("{}", p.summary());
        let arate = p.audio_rate().unwrap_or(0.0);
        assert!((arate - 48000.0 / 1024.0).abs() < 0.5 || (arate - 44100.0 / 1024.0).abs() < 0.5, "{}: AAC frame rate {arate} from the frame durations", p.label);
        let min_a = (arate * WINDOW * MIN_RATIO).floor() as usize;
        if !p.errors.is_empty() || p.video_frames() < min_v || p.audio_frames() < min_a {
            eprintln!("{}", diag());
        }
        p.assert_healthy(min_v, min_a);
    }

    // One pull on B for its two players; one on C.
    eprintln!("B (pulls, players) samples: {:?}", seen.b_samples);
    let max_pulls = seen.b_samples.iter().map(|s| s.0).fold(0.0, f64::max);
    assert_eq!(max_pulls, 1.0, "B's rtcbridge_cluster_pulls (summed over workers) peaked at {max_pulls} (want exactly 1 however many players): {:?}", seen.b_samples);
    assert!(seen.b_samples.iter().any(|&(pulls, players)| pulls == 1.0 && players == 2.0), "B's /metrics never showed 1 pull with its 2 players: {:?}", seen.b_samples);
    assert_eq!(seen.c_max_pulls, 1.0, "C's rtcbridge_cluster_pulls peaked at {}", seen.c_max_pulls);
    assert_eq!(seen.b_source.as_deref(), Some("pull"), "B's /api/streams source of {name}");

    // /api/cluster on every node: the stream owned by A, three live nodes.
    let a_url = node_url(&t.a);
    for (l, v) in &seen.clusters {
        eprintln!("GET /api/cluster on {l}: {v}");
        assert_eq!(directory_entry(v, name), Some((t.id_a.clone(), a_url.clone())), "{l}'s directory entry for {name}: {v}");
        let nodes = v["nodes"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!((nodes, alive_nodes(v).len()), (3, 3), "{l}'s /api/cluster: 3 nodes, all alive: {v}");
        assert_eq!(v["redis"], "ok", "{l}'s /api/cluster redis: {v}");
    }

    // The same name published on C meanwhile: refused.
    let (ok, err) = seen.refused.clone().unwrap_or_default();
    assert!(!ok && err.contains("already being published"), "ffmpeg publishing {name} on C while A owns it: succeeded={ok}, stderr: {err}\n{}", diag());
    assert_eq!(seen.after_refusal, Some((t.id_a.clone(), a_url)), "C's directory after the refused publish");
}

// ---------------------------------------------------------------------------
// b. A second publisher of the name on C.
// ---------------------------------------------------------------------------

#[test]
fn second_publisher_of_a_name_a_owns_is_refused_on_c() {
    let _one = serial();
    let name = "dup";
    let t = Trio::start(&[]);
    let mut publisher = Publisher::ffmpeg(&t.a.rtmp_url(name), 1000);
    t.a.wait_stream_live(name, Duration::from_secs(15));
    // C knows A owns it (registered within 0.5 s, read back at C's next tick).
    wait_directory(&t.c, name, &t.id_a, Duration::from_secs(3));

    let (ok, err) = try_publish(&t.c.rtmp_url(name));
    eprintln!("ffmpeg publishing {name} on C: succeeded={ok}, stderr: {}", err.trim());
    assert!(!ok, "ffmpeg published {name} on C while A owns it\n{}", t.logs(20));
    assert!(err.contains("already being published"), "ffmpeg's error should say the name is already being published: {err}");

    let mut raw = RtmpClient::connect(t.c.rtmp_port);
    raw.connect_app("live");
    let sid = raw.create_stream();
    raw.publish(sid, name);
    raw.wait_status(0, "NetStream.Publish.BadName", Duration::from_secs(5));
    assert_eq!(status_description(&raw, "NetStream.Publish.BadName").as_deref(), Some("dup is already being published."), "{}", raw.describe());
    assert!(status_description(&raw, "NetStream.Publish.Start").is_none(), "Publish.Start on C: {}", raw.describe());
    drop(raw);

    // Nothing changed: A still owns it, C's players get A's stream.
    for (l, s) in [("A", &t.a), ("B", &t.b), ("C", &t.c)] {
        let v = cluster_json(s);
        assert_eq!(directory_entry(&v, name).map(|e| e.0), Some(t.id_a.clone()), "{l}'s directory after the refused publishes: {v}");
    }
    let r = ProbePlayer::start("player on C", &t.c.rtmp_url(name), 3.0).finish(Duration::from_secs(15));
    eprintln!("{}", r.summary());
    r.assert_healthy(min_video_frames(3.0, MIN_RATIO), min_audio_frames(3.0, MIN_RATIO));
    assert_eq!(stream_source(&t.c, name).as_deref(), Some("pull"), "C plays A's stream through a pull");
    assert!(publisher.is_running(), "A's publisher died: {}", publisher.log());
}

// ---------------------------------------------------------------------------
// c. The origin node dies.
// ---------------------------------------------------------------------------

/// Players (hand-written RTMP clients) on B and C of `name`, each with 1 s of video.
fn players_on_b_and_c(t: &Trio, name: &str) -> Vec<(&'static str, RtmpClient)> {
    let mut out = Vec::new();
    for (label, s) in [("player on B", &t.b), ("player on C", &t.c)] {
        let mut c = RtmpClient::connect(s.rtmp_port);
        let sent = c.start_play(name);
        c.wait_status(0, "NetStream.Play.Start", Duration::from_secs(5));
        wait_for(Duration::from_secs(10), &format!("1 s of video at the {label}"), || video_frames_after(&c, 0, sent) >= 30);
        out.push((label, c));
    }
    out
}

#[test]
fn origin_killed_players_on_b_and_c_get_unpublish_notify_after_grace() {
    let _one = serial();
    let name = "orig";
    let mut t = Trio::start(&["--unpublish-grace", "4"]);
    let _publisher = Publisher::ffmpeg(&t.a.rtmp_url(name), 1000);
    t.a.wait_stream_live(name, Duration::from_secs(15));
    wait_directory(&t.b, name, &t.id_a, Duration::from_secs(3));
    wait_directory(&t.c, name, &t.id_a, Duration::from_secs(3));
    let players = players_on_b_and_c(&t, name);
    let from: Vec<usize> = players.iter().map(|(_, c)| c.len()).collect();

    let t_kill = kill_node(&mut t.a);
    eprintln!("node A killed (SIGKILL)");
    // B's directory loses the stream and A within the lease (+1 s).
    let gone = wait_for_value(LEASE + SLACK + Duration::from_secs(3), "B's directory to drop the stream and node A", || {
        let v = try_cluster_json(&t.b)?;
        (directory_entry(&v, name).is_none() && !alive_nodes(&v).contains(&t.id_a)).then(|| t_kill.elapsed())
    });
    eprintln!("B's directory without {name} and node A {:.2} s after the kill", gone.as_secs_f64());

    for ((label, c), i0) in players.iter().zip(from) {
        let latest = GRACE + LEASE + SLACK;
        let (i, rec) = c
            .wait_event(i0, (t_kill + latest + Duration::from_secs(2)).saturating_duration_since(Instant::now()), |e| e.status() == Some(UNPUBLISH_NOTIFY))
            .unwrap_or_else(|| panic!("{label}: no {UNPUBLISH_NOTIFY} within {latest:?} (+2 s) of the kill: {}\n{}", c.describe(), t.logs(30)));
        let after = rec.at.saturating_duration_since(t_kill);
        eprintln!("{label}: {UNPUBLISH_NOTIFY} {:.2} s after the kill", after.as_secs_f64());
        assert!(after >= GRACE, "{label}: {UNPUBLISH_NOTIFY} {after:?} after the kill, before the grace window ({GRACE:?}) ran out: {}", c.describe());
        assert!(after <= latest, "{label}: {UNPUBLISH_NOTIFY} {after:?} after the kill (want within grace + lease + 1 s = {latest:?})\n{}", t.logs(30));
        let closed_before = c.events()[i0..i].iter().any(|e| matches!(e.event, Event::Closed(_)));
        assert!(!closed_before, "{label}: connection closed before {UNPUBLISH_NOTIFY}: {}", c.describe());
    }
    assert!(gone <= LEASE + SLACK, "B's directory still listed {name} or node A {gone:?} after the kill (lease {LEASE:?} + 1 s)");
}

#[test]
fn origin_killed_publisher_moves_to_b_within_grace_players_continue() {
    let _one = serial();
    let name = "moving";
    let mut t = Trio::start(&["--unpublish-grace", "4"]);
    let _first = Publisher::ffmpeg(&t.a.rtmp_url(name), 1000);
    t.a.wait_stream_live(name, Duration::from_secs(15));
    wait_directory(&t.b, name, &t.id_a, Duration::from_secs(3));
    wait_directory(&t.c, name, &t.id_a, Duration::from_secs(3));
    let players = players_on_b_and_c(&t, name);
    let from: Vec<usize> = players.iter().map(|(_, c)| c.len()).collect();

    let t_kill = kill_node(&mut t.a);
    sleep_until(t_kill + Duration::from_secs(1));
    let t_repub = Instant::now();
    let mut second = Publisher::ffmpeg(&t.b.rtmp_url(name), 1000);
    eprintln!("node A killed; the publisher publishes again on B {:.2} s later", t_repub.duration_since(t_kill).as_secs_f64());

    // Frames again within 3 s of the republish: sequence headers, then a keyframe.
    for ((label, c), &i0) in players.iter().zip(&from) {
        let (i, rec) = c
            .wait_event(i0, (t_repub + Duration::from_secs(3)).saturating_duration_since(Instant::now()), |e| coded_video(e).is_some() && e.at > t_kill)
            .unwrap_or_else(|| panic!("{label}: no video within 3 s of the republish on B: {}\npublisher: {}\n{}", c.describe(), second.log(), t.logs(30)));
        eprintln!("{label}: video again {:.2} s after the republish", rec.at.saturating_duration_since(t_repub).as_secs_f64());
        assert_eq!(coded_video(&rec), Some(true), "{label}: the first frame after the move is not a keyframe: {}", c.describe());
        // Nothing comes from dead A after the kill: everything later is the moved stream's.
        // Its AVC and AAC sequence headers come before its first video and audio frame.
        c.wait_event(i, Duration::from_secs(2), |e| e.is_media(MSG_AUDIO) && !is_aac_seq_header(e));
        let evs = c.events();
        let post: Vec<&Rec> = evs[i0..].iter().filter(|e| e.at > t_kill + Duration::from_millis(200)).collect();
        let pos = |f: &dyn Fn(&Rec) -> bool| post.iter().position(|e| f(e));
        let (avc, first_video) = (pos(&is_avc_seq_header), pos(&|e: &Rec| coded_video(e).is_some()));
        let (aac, first_audio) = (pos(&is_aac_seq_header), pos(&|e: &Rec| e.is_media(MSG_AUDIO) && !is_aac_seq_header(e)));
        eprintln!("{label}: after the kill: AVC header #{avc:?}, first video #{first_video:?}, AAC header #{aac:?}, first audio #{first_audio:?}");
        assert!(avc.is_some() && avc < first_video, "{label}: no fresh AVC sequence header before the first video frame after the move: {}", c.describe());
        assert!(first_audio.is_some(), "{label}: no audio after the move: {}", c.describe());
        assert!(aac.is_some() && aac < first_audio, "{label}: no fresh AAC sequence header before the first audio frame after the move: {}", c.describe());
    }

    // No UnpublishNotify, connections open, frames flowing, up to grace + lease + 1 s.
    let quiet_until = t_kill + GRACE + LEASE + SLACK;
    for ((label, c), &i0) in players.iter().zip(&from) {
        let un = c.wait_event(i0, quiet_until.saturating_duration_since(Instant::now()), |e| e.status() == Some(UNPUBLISH_NOTIFY));
        assert!(un.is_none(), "{label}: {UNPUBLISH_NOTIFY} although the publisher came back on B within the grace window: {}\n{}", c.describe(), t.logs(30));
    }
    for ((label, c), &i0) in players.iter().zip(&from) {
        assert!(!c.closed(), "{label}: connection closed: {}", c.describe());
        let recent = video_frames_after(c, i0, Instant::now() - Duration::from_secs(2));
        assert!(recent >= 45, "{label}: {recent} video frames in the last 2 s (30 fps): {}", c.describe());
        if let Some((ty, i, prev, ts)) = timestamps_step_back(&c.events()) {
            panic!("{label}: {} timestamp stepped back at event {i}: {prev} then {ts}: {}", if ty == MSG_VIDEO { "video" } else { "audio" }, c.describe());
        }
        let statuses: Vec<String> = c.statuses().into_iter().map(|(_, s)| s).collect();
        eprintln!("{label}: statuses {statuses:?}");
    }
    assert!(second.is_running(), "the publisher on B stopped: {}", second.log());
    assert_eq!(stream_source(&t.b, name).as_deref(), Some("rtmp"), "B's /api/streams source of {name}");
    assert_eq!(stream_source(&t.c, name).as_deref(), Some("pull"), "C's /api/streams source of {name}");
    assert_eq!(directory_entry(&cluster_json(&t.c), name), Some((t.id_b.clone(), node_url(&t.b))), "C's directory entry for {name}");
}

// ---------------------------------------------------------------------------
// d. Redis stops for 10 s.
// ---------------------------------------------------------------------------

#[test]
fn redis_outage_local_streams_and_pulls_go_on_directory_whole_again() {
    let _one = serial();
    let name = "steady";
    let mut t = Trio::start(&[]);
    let _publisher = Publisher::ffmpeg(&t.a.rtmp_url(name), 1000);
    t.a.wait_stream_live(name, Duration::from_secs(15));
    wait_directory(&t.b, name, &t.id_a, Duration::from_secs(3));
    let mut local = RtmpClient::connect(t.a.rtmp_port);
    let mut pulled = RtmpClient::connect(t.b.rtmp_port);
    local.start_play(name);
    let t0 = Instant::now();
    pulled.start_play(name);
    // Playing live for a while (past the cached GOP they join with) before Redis goes.
    let live_from = t0 + Duration::from_secs(1);
    wait_for(Duration::from_secs(10), "1 s of live video at the players on A and B", || {
        video_frames_after(&local, 0, live_from) >= 30 && video_frames_after(&pulled, 0, live_from) >= 30
    });

    let t_down = t.redis.kill();
    eprintln!("redis-server killed");
    wait_for(Duration::from_secs(3), "C's /api/cluster to say Redis is unreachable", || {
        try_cluster_json(&t.c).is_some_and(|v| v["redis"].as_str().is_some_and(|r| r.starts_with("unreachable")))
    });
    let mut refused = RtmpClient::connect(t.c.rtmp_port);
    refused.start_play(name);
    refused.wait_status(0, "NetStream.Play.Failed", Duration::from_secs(5));
    let why = status_description(&refused, "NetStream.Play.Failed").unwrap_or_default();
    eprintln!("play of {name} on C during the outage: NetStream.Play.Failed {why:?}");
    assert_eq!(why, format!("Stream {name} is not live on this node, and the cluster directory (Redis) is unreachable."), "{}", refused.describe());
    assert!(status_description(&refused, "NetStream.Play.Start").is_none(), "Play.Start on C during the outage: {}", refused.describe());
    drop(refused);

    sleep_until(t_down + Duration::from_secs(10));
    let t_up = t.redis.restart();
    let outage = t_up.duration_since(t_down);
    eprintln!("redis-server started again on port {} after {:.2} s", t.redis.port, outage.as_secs_f64());
    let stream_key = format!("rtcbridge:stream:{name}");
    let mut keys = Vec::new();
    let back = wait_for_value(LEASE + SLACK + Duration::from_secs(4), "the directory to be whole again in Redis", || {
        keys = t.redis.keys("rtcbridge:*");
        let nodes = keys.iter().filter(|k| k.starts_with("rtcbridge:node:")).count();
        (keys.contains(&stream_key) && nodes == 3).then(|| t_up.elapsed())
    });
    eprintln!("KEYS rtcbridge:* whole again {:.2} s after the restart: {keys:?}", back.as_secs_f64());
    assert!(back <= LEASE + SLACK, "the directory took {back:?} to be whole again (want within the lease {LEASE:?} + 1 s)");
    let value = t.redis.cli(&["GET", &stream_key]).unwrap_or_default();
    assert_eq!(value.trim(), format!("{} {}", t.id_a, node_url(&t.a)), "{stream_key} after the restart");

    // A new player on C of A's stream plays.
    let mut fresh = RtmpClient::connect(t.c.rtmp_port);
    let sent = fresh.start_play(name);
    fresh.wait_status(0, "NetStream.Play.Start", Duration::from_secs(5));
    let (_, first) = fresh
        .wait_event(0, Duration::from_secs(5), |e| coded_video(e).is_some())
        .unwrap_or_else(|| panic!("new player on C after the restart: no video in 5 s: {}\n{}", fresh.describe(), t.logs(30)));
    eprintln!("new player on C: first video {:.2} s after play", first.at.duration_since(sent).as_secs_f64());
    assert_eq!(coded_video(&first), Some(true), "new player on C: first video frame not a keyframe: {}", fresh.describe());
    wait_for(Duration::from_secs(5), "1 s of video at the new player on C", || video_frames_after(&fresh, 0, sent) >= 30);

    // The local player on A and the pull's player on B never stalled.
    let end = Instant::now();
    for (label, c) in [("local player on A", &local), ("player on B (pull from before the outage)", &pulled)] {
        let (gap, at) = max_video_gap(&c.events(), t_down - Duration::from_secs(1), end);
        eprintln!(
            "{label}: longest gap between video frames {:.0} ms, from {:+.2} s after Redis went down",
            gap.as_secs_f64() * 1000.0,
            at.checked_duration_since(t_down).map_or_else(|| -t_down.duration_since(at).as_secs_f64(), |d| d.as_secs_f64())
        );
        assert!(
            gap <= Duration::from_secs(1),
            "{label}: {gap:?} without a video frame from {:.2} s after Redis went down (down for {outage:?}): {}\n{}",
            at.saturating_duration_since(t_down).as_secs_f64(),
            c.describe(),
            t.logs(40)
        );
        assert!(!c.closed(), "{label}: connection closed: {}", c.describe());
    }

    // The outage logged at most once a second by each node.
    let most = outage.as_secs() as usize + 2;
    for (l, s) in [("A", &t.a), ("B", &t.b), ("C", &t.c)] {
        let n = s.log().lines().filter(|l| l.contains("cluster: Redis") && l.contains("unreachable")).count();
        eprintln!("node {l}: {n} 'Redis ... unreachable' log lines during the {:.1} s outage", outage.as_secs_f64());
        assert!((1..=most).contains(&n), "node {l} logged the outage {n} times in {outage:?} (want 1..={most}: at most once a second)");
    }
}
