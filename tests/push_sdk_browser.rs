//! RTMP push (republishing) from the real Flashphoner Web SDK: its Two Way Streaming
//! example page, unchanged, in headless Chromium, publishes with the SDK's `rtmpUrl`
//! stream option (tests/js/publish.mjs --rtmp-url adds it to the page's
//! `session.createStream`), and the server pushes the stream to
//! `rtmpUrl + "/rtmp_" + NAME` (the default `--push-name-prefix`).
//!
//! 1. `rtmpUrl` is an nginx-rtmp server the test starts: GET /api/push lists the push
//!    (stream, destination, state "pushing", frames and bytes moving), /metrics counts it,
//!    and ffmpeg playing `rtmp://127.0.0.1:NGINX/live/rtmp_NAME` from nginx decodes H.264 +
//!    AAC with zero errors, at least 90% of the frames of a 10 s window (video at the
//!    frame rate the browser's camera track reports, audio at the AAC rate), pts strictly
//!    increasing. nginx's application has `wait_key on; wait_video on;`, so that a player
//!    joining the live stream mid-GOP starts at a key frame, audio with it (nginx's
//!    subscriber behaviour, not ours: otherwise audio opens the 10 s window and video
//!    joins it up to a GOP later). That nginx serves `live/rtmp_NAME` at all shows the
//!    push published that key (the API and the log show the key redacted).
//! 2. `rtmpUrl` is a port where nothing listens: the publisher's stream gets status FAILED
//!    with info "Failed by RTMP writer error" (the page shows it as "Other: <info>" in
//!    #publishInfo), a server log line names the destination and the refusal, and
//!    GET /api/push shows the push with that error.
//!
//! Both run in a loopback-only network namespace (TESTING.md) and one at a time (the
//! frame counts are about the server, not about two Chromiums sharing two cores).
mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::browser::{run_browser_at, status_seq, Ev};
use common::{netns, scratch_path, tail, tool, wait_child, ChildGuard, FramePlayer, Nginx, PlayResult, Server};

/// The player's window at nginx (ffmpeg `-t`).
const WINDOW: f64 = 10.0;
/// Share of the window's frames the player must decode.
const MIN_RATIO: f64 = 0.9;
/// How long the browser keeps publishing after PUBLISHING (push setup, the player's
/// start and its 10 s window fit well inside).
const PUBLISH_SECS: u32 = 22;
/// The server's default `--push-name-prefix`.
const PREFIX: &str = "rtmp_";
/// The info string WCS (and the contract) gives a republish that fails.
const RTMP_WRITER_ERROR: &str = "Failed by RTMP writer error";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `pushes` array of GET /api/push.
fn pushes(server: &Server) -> Result<Vec<serde_json::Value>, String> {
    let (code, body) = common::http_get(server.http_port, "/api/push").map_err(|e| format!("GET /api/push: {e}"))?;
    if code != 200 {
        return Err(format!("GET /api/push answered {code}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("GET /api/push is not JSON ({e}): {body}"))?;
    v.get("pushes").and_then(|p| p.as_array()).cloned().ok_or_else(|| format!("GET /api/push has no \"pushes\" array: {body}"))
}

fn push_of(server: &Server, stream: &str) -> Option<serde_json::Value> {
    pushes(server).ok()?.into_iter().find(|p| p["stream"] == stream)
}

/// Whether `shown` (a URL as GET /api/push or the log shows it) names destination
/// `base/key`. The contract hides only a password; the README also hides most of a stream
/// key ("rtmp_sdkpush1" shows as "rtmp***"): both count, a different key does not.
fn shows_dest(shown: &str, base: &str, key: &str) -> bool {
    let Some(k) = shown.strip_prefix(base).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    k == key || k.strip_suffix("***").is_some_and(|p| !p.is_empty() && key.starts_with(p))
}

/// The URL a push log line shows after "-> " (up to the ": " that follows it).
fn logged_url(line: &str) -> Option<&str> {
    let rest = &line[line.find("-> ")? + 3..];
    Some(rest.split(": ").next().unwrap_or(rest).trim())
}

/// `{"t": ms, "media": {...}}` lines of publish.mjs --media-stats, in order: (seconds, media).
fn media_lines(raw: &str) -> Vec<(f64, serde_json::Value)> {
    raw.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("t")?.as_f64()? / 1000.0, v.get("media")?.clone())))
        .collect()
}

/// Frames per second of counter `key` over the media lines (first to last sample that has it).
fn rate_of(media: &[(f64, serde_json::Value)], key: &str) -> Option<f64> {
    let with: Vec<(f64, f64)> = media.iter().filter_map(|(t, m)| Some((*t, m[key].as_f64()?))).collect();
    let (&(t0, a), &(t1, b)) = (with.first()?, with.last()?);
    (t1 - t0 >= 3.0).then(|| (b - a) / (t1 - t0))
}

/// codec_type → codec_name of what ffprobe finds at `url` (at most `timeout`).
fn probe_codecs(url: &str, timeout: Duration) -> Result<Vec<(String, String)>, String> {
    let out_path = scratch_path("ffprobe", "json");
    let err_path = scratch_path("ffprobe", "err");
    let child = Command::new(tool("ffprobe"))
        .args(["-v", "error", "-rw_timeout", "5000000", "-show_entries", "stream=codec_type,codec_name,profile,width,height,sample_rate,channels", "-of", "json", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("ffprobe out"))
        .stderr(std::fs::File::create(&err_path).expect("ffprobe err"))
        .spawn()
        .map_err(|e| format!("start ffprobe: {e}"))?;
    let mut guard = ChildGuard::new("ffprobe", child);
    let st = wait_child(&mut guard.child, timeout);
    let out = common::read_file_lossy(&out_path);
    let err = common::read_file_lossy(&err_path);
    if !st.is_some_and(|s| s.success()) {
        return Err(format!("ffprobe {url}: {st:?} within {timeout:?}; stderr: {err}"));
    }
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("ffprobe output is not JSON ({e}): {out}"))?;
    eprintln!("ffprobe {url}: {}", v["streams"]);
    Ok(v["streams"]
        .as_array()
        .map(|a| a.iter().map(|s| (s["codec_type"].as_str().unwrap_or("").to_string(), s["codec_name"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default())
}

/// What the checker thread saw while the browser published.
struct Seen {
    /// The push object of GET /api/push once its state was "pushing".
    pushing: Option<serde_json::Value>,
    /// Every distinct state GET /api/push showed for the push, in order.
    states: Vec<String>,
    /// The push object after the player's window.
    after: Option<serde_json::Value>,
    metrics_pushing: f64,
    metrics_frames: f64,
    metrics_bytes: f64,
    codecs: Result<Vec<(String, String)>, String>,
    play: Option<PlayResult>,
    /// Server-side ingest video frames (/api/streams) at the player's start and end.
    ingest: Option<(u64, u64, f64)>,
    error: Option<String>,
}

#[test]
fn flashphoner_sdk_rtmp_url_pushes_to_nginx_rtmp() {
    let _one = serial();
    if netns::reexec("flashphoner_sdk_rtmp_url_pushes_to_nginx_rtmp") {
        return;
    }
    let name = "sdkpush1";
    let nginx = Nginx::start("application live { live on; wait_key on; wait_video on; }");
    let server = Server::start(&[]);
    let rtmp_url = format!("rtmp://127.0.0.1:{}/live", nginx.port);
    let dest = format!("{rtmp_url}/{PREFIX}{name}");
    let play_url = nginx.url(&format!("{PREFIX}{name}"));
    let http = format!("http://127.0.0.1:{}", server.http_port);
    let ws = format!("ws://127.0.0.1:{}/", server.http_port);

    let seen = std::thread::scope(|scope| {
        let checker = scope.spawn(|| {
            let mut seen = Seen {
                pushing: None,
                states: Vec::new(),
                after: None,
                metrics_pushing: 0.0,
                metrics_frames: 0.0,
                metrics_bytes: 0.0,
                codecs: Err("not probed".into()),
                play: None,
                ingest: None,
                error: None,
            };
            // The push shows up once the WebRTC publish is up: wait for "pushing".
            let deadline = Instant::now() + Duration::from_secs(45);
            loop {
                if let Some(p) = push_of(&server, name) {
                    let st = p["state"].as_str().unwrap_or("?").to_string();
                    if seen.states.last() != Some(&st) {
                        seen.states.push(st.clone());
                    }
                    if st == "pushing" {
                        seen.pushing = Some(p);
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    seen.error = Some(format!("no push of {name} in state \"pushing\" within 45 s; states seen {:?}; GET /api/push: {:?}", seen.states, pushes(&server)));
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let m = server.metrics();
            seen.metrics_pushing = m.sum_where("rtcbridge_pushes", &[("state", "pushing")]);
            let ingest0 = (server.video_frames(name), Instant::now());
            let player = FramePlayer::start("player of the push at nginx", &play_url, WINDOW);
            seen.codecs = probe_codecs(&play_url, Duration::from_secs(15));
            let play = player.finish(Duration::from_secs(25));
            seen.ingest = Some((ingest0.0, server.video_frames(name), ingest0.1.elapsed().as_secs_f64()));
            seen.play = Some(play);
            seen.after = push_of(&server, name);
            let m = server.metrics();
            seen.metrics_frames = m.sum("rtcbridge_push_frames_total");
            seen.metrics_bytes = m.sum("rtcbridge_push_bytes_total");
            seen
        });
        let (evs, raw) = run_browser_at(&http, &ws, &["--rtmp-url", &rtmp_url, "--media-stats"], "sdk", name, PUBLISH_SECS, |_| {});
        (checker.join().expect("checker thread"), evs, raw)
    });
    let (seen, evs, raw) = seen;
    let seq = status_seq(&evs, "#publishStatus");
    let media = media_lines(&raw);
    let diag = || {
        format!(
            "publish statuses {seq:?}\nbrowser media stats (last 2): {:?}\nGET /api/push: {:?}\nnginx error.log tail:\n{}\nserver log tail:\n{}",
            media.iter().rev().take(2).map(|(t, m)| format!("{t:.1} s {m}")).collect::<Vec<_>>(),
            pushes(&server),
            tail(&nginx.error_log(), 20),
            tail(&server.log(), 40)
        )
    };
    assert!(seq.contains(&"PUBLISHING".to_string()), "the SDK page never showed PUBLISHING\n{raw}\n{}", diag());
    assert!(!seq.contains(&"FAILED".to_string()), "the publish with rtmpUrl {rtmp_url} FAILED: {:?}\n{}", status_seq(&evs, "#publishInfo"), diag());
    if let Some(e) = &seen.error {
        panic!("{e}\n{}", diag());
    }

    // The API: the push of this stream to rtmpUrl/rtmp_NAME, pushing, then moving frames.
    let p = seen.pushing.as_ref().expect("pushing");
    eprintln!("GET /api/push while pushing: {p}\nstates seen: {:?}", seen.states);
    let key = format!("{PREFIX}{name}");
    assert!(p["url"].as_str().is_some_and(|u| shows_dest(u, &rtmp_url, &key)), "the push goes to rtmpUrl + \"/{PREFIX}\" + name ({dest}): {p}");
    assert!(p["id"].as_str().is_some_and(|id| id.starts_with("P-")), "push id: {p}");
    assert!(!seen.states.iter().any(|s| s == "retrying" || s == "stopped"), "states before pushing: {:?}", seen.states);
    assert!(seen.metrics_pushing >= 1.0, "/metrics rtcbridge_pushes{{state=\"pushing\"}} = {} while the API shows the push pushing", seen.metrics_pushing);
    let after = seen.after.as_ref().unwrap_or_else(|| panic!("the push of {name} vanished from GET /api/push during the window\n{}", diag()));
    eprintln!("GET /api/push after the window: {after}");
    assert_eq!(after["state"], "pushing", "after the 10 s window: {after}\n{}", diag());
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    assert!(num(after, "frames") > num(p, "frames") + 200 && num(after, "bytes") > num(p, "bytes"), "frames/bytes moving: {p} then {after}");
    assert_eq!(num(after, "reconnects"), 0, "no reconnect to a healthy nginx: {after}");
    assert_eq!(num(after, "drops"), 0, "no drops to a healthy nginx on loopback: {after}");
    assert!(seen.metrics_frames >= num(after, "frames") as f64 && seen.metrics_bytes > 0.0, "/metrics push totals: frames {} bytes {}", seen.metrics_frames, seen.metrics_bytes);

    // What nginx's player gets: H.264 + AAC.
    let codecs = seen.codecs.as_ref().unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    let codec = |t: &str| codecs.iter().filter(|(ct, _)| ct == t).map(|(_, c)| c.as_str()).collect::<Vec<_>>();
    assert_eq!(codec("video"), vec!["h264"], "video of the pushed stream at nginx: {codecs:?}");
    assert_eq!(codec("audio"), vec!["aac"], "audio of the pushed stream at nginx: {codecs:?}");

    // Frames: the rate the camera really delivers (the page's getStats() media-source frame
    // counter over the run; the SDK asks for 30 fps, Chromium's fake camera gives 20), 90%
    // of the window's frames.
    let cam_fps = rate_of(&media, "sourceFrames").unwrap_or_else(|| panic!("publish.mjs --media-stats gave no media-source frame counts:\n{raw}"));
    let settings_fps = media.iter().rev().find_map(|(_, m)| m["frameRate"].as_f64());
    let send_rate = rate_of(&media, "framesSent").unwrap_or(0.0);
    let play = seen.play.as_ref().expect("player result");
    let (i0, i1, secs) = seen.ingest.unwrap_or((0, 0, 1.0));
    let vtb_rate = play.video().map(|v| v.frames.len() as f64 / WINDOW).unwrap_or(0.0);
    let arate = play.audio().map(|a| a.tb.1 as f64 / a.tb.0.max(1) as f64 / 1024.0).unwrap_or(0.0);
    eprintln!(
        "camera delivers {cam_fps:.2} fps (track settings say {settings_fps:?}), browser sent {send_rate:.2} fps; server ingest {:.1} fps during the window; \
         player at nginx: {} video ({vtb_rate:.1}/s), {} audio (AAC at {:.0} Hz: {arate:.2} frames/s) in {WINDOW} s, {} errors, exit {:?}",
        (i1 - i0) as f64 / secs,
        play.video_count(),
        play.audio_count(),
        arate * 1024.0,
        play.errors.len(),
        play.status
    );
    assert!((5.0..=60.0).contains(&cam_fps), "implausible camera frame rate {cam_fps}");
    assert!(play.audio().is_some(), "no audio stream at nginx's player\n{}", diag());
    assert!((arate * 1024.0 - 48000.0).abs() < 1.0 || (arate * 1024.0 - 44100.0).abs() < 1.0, "AAC sample rate from the audio time base: {:?}", play.audio().map(|a| a.tb));
    let min_v = (cam_fps * WINDOW * MIN_RATIO).floor() as usize;
    let min_a = (arate * WINDOW * MIN_RATIO).floor() as usize;
    if play.video_count() < min_v || play.audio_count() < min_a || !play.errors.is_empty() {
        eprintln!("{}", diag());
    }
    play.assert_healthy(min_v, min_a, true);
}

#[test]
fn flashphoner_sdk_rtmp_url_refused_fails_the_stream() {
    let _one = serial();
    if netns::reexec("flashphoner_sdk_rtmp_url_refused_fails_the_stream") {
        return;
    }
    let name = "sdkpush2";
    let server = Server::start(&[]);
    // A port nothing listens on (bound and released: free_port()).
    let port = common::free_port();
    let rtmp_url = format!("rtmp://127.0.0.1:{port}/live");
    let dest = format!("{rtmp_url}/{PREFIX}{name}");
    let http = format!("http://127.0.0.1:{}", server.http_port);
    let ws = format!("ws://127.0.0.1:{}/", server.http_port);
    let (evs, raw) = run_browser_at(&http, &ws, &["--rtmp-url", &rtmp_url], "sdk", name, 5, |_| {});
    let seq = status_seq(&evs, "#publishStatus");
    let info = status_seq(&evs, "#publishInfo");
    let diag = || format!("publish statuses {seq:?}, infos {info:?}\n{raw}\nGET /api/push: {:?}\nserver log tail:\n{}", pushes(&server), tail(&server.log(), 40));
    assert!(seq.contains(&"FAILED".to_string()), "a refused rtmpUrl must fail the publisher's stream (FAILED)\n{}", diag());
    // The page writes a published stream's FAILED info as "Other: " + stream.getInfo().
    let want = format!("Other: {RTMP_WRITER_ERROR}");
    assert!(info.contains(&want), "#publishInfo should show {want:?}: {info:?}\n{}", diag());
    let failed_at = evs.iter().find(|e: &&Ev| e.el == "#publishStatus" && e.text == "FAILED").map(|e| e.t);
    let clicked = evs.iter().find(|e| e.el == "action" && e.text == "publish").map(|e| e.t);
    if let (Some(f), Some(c)) = (failed_at, clicked) {
        eprintln!("FAILED {} ms after clicking Publish", f.saturating_sub(c));
    }

    // The server says where and why.
    let key = format!("{PREFIX}{name}");
    let line = server.wait_log_line(Duration::from_secs(5), "naming the push destination and the refusal", |l| {
        l.contains("push P-") && logged_url(l).is_some_and(|u| shows_dest(u, &rtmp_url, &key)) && l.to_ascii_lowercase().contains("refused")
    });
    eprintln!("server log: {line}");
    let p = push_of(&server, name).unwrap_or_else(|| panic!("the failed push of {name} is not in GET /api/push\n{}", diag()));
    eprintln!("GET /api/push: {p}");
    assert!(p["url"].as_str().is_some_and(|u| shows_dest(u, &rtmp_url, &key)), "destination {dest}: {p}");
    assert_ne!(p["state"], "pushing", "{p}");
    assert!(p["last_error"].as_str().is_some_and(|e| e.to_ascii_lowercase().contains("refused")), "last_error names the refusal: {p}");
}
