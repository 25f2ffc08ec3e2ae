//! Access control on WebRTC playback over WHEP, with aiortc (tests/py/whep_play.py) as the
//! player and ffmpeg publishing over RTMP.
//!
//! 1. `--auth-secret FILE --auth play`: publishing needs no token; a WHEP POST without a
//!    token is 401 with `WWW-Authenticate: Bearer`; a play token for another name, a
//!    publish token for the name, an expired token and a token signed with another secret
//!    are 403, each with its reason in the body; a play token from `rtcbridge token` plays
//!    (201, aiortc decodes frames) and is not logged.
//! 2. `--auth-hook URL`, a backend started by the test that allows play of names starting
//!    with "ok" (and every connect and publish): WHEP on the allowed name is 201 and plays;
//!    on another it is 403 "Restricted access". The backend saw `{action: "play",
//!    protocol: "whep", ...}` for both, with the bearer token passed on.
//!
//! 3. The same for Flashphoner `playStream`, through the SDK's Player page (unchanged) in
//!    headless Chromium, the token passed as an application passes it
//!    (`createSession({custom: {token}})`): without one, or with another name's, FAILED
//!    "Restricted access" and no media; with `rtcbridge token`'s, PLAYING and decoded video.
//! 4. The hook for `playStream`: FAILED "Restricted access" for a denied name, PLAYING for an
//!    allowed one; the backend saw `{action: "play", protocol: "webrtc"}` with the token and
//!    the SDK's `custom`.
//!
//! Each runs in a loopback-only network namespace (TESTING.md): aiortc's ICE uses 127.0.0.2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/play.rs"]
mod play;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::hookd::{Answer, Backend};
use common::signal::{head_value, http_raw};
use common::{netns, scratch_path, tail, Publisher, Server};
use play::{media_window, run_page_with, run_whep, serial, Page, PageRun, WhepRun};
use rtcbridge::relay::auth::{AuthAction, TokenClaims, TokenKey};

const SECRET: &str = "whep-play-secret-0123456789abcdef";
/// Seconds of decoded media asked of aiortc.
const WINDOW_SECS: f64 = 3.0;
/// Video frames decoded in the window, at least (the source is 30 fps: half of it).
const MIN_FRAMES: f64 = 15.0 * WINDOW_SECS;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sign(secret: &str, action: AuthAction, name: &str, expires_unix: u64) -> String {
    TokenKey::from_file_bytes(secret.as_bytes()).unwrap().sign(&TokenClaims { action, name: name.into(), expires_unix, ip: None })
}

/// A token made the way an operator makes one: `rtcbridge token --secret FILE --play NAME`.
fn cli_play_token(secret_file: &std::path::Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rtcbridge"))
        .args(["token", "--secret", secret_file.to_str().unwrap(), "--play", name, "--ttl", "1h"])
        .output()
        .expect("run rtcbridge token");
    assert!(out.status.success(), "rtcbridge token: {}", String::from_utf8_lossy(&out.stderr));
    let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(!t.is_empty() && !t.contains(char::is_whitespace), "rtcbridge token printed {t:?}");
    t
}

/// POST /whep/NAME with an (unused) SDP body and an optional bearer token: (status, head, body).
fn whep_post(port: u16, name: &str, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    http_raw(port, "POST", &format!("/whep/{name}"), &format!("Content-Type: application/sdp\r\n{auth}"), "v=0\r\n")
}

fn context(run: &WhepRun, server: &Server) -> String {
    format!("whep_play.py (exit {:?}):\n{}\nserver log tail:\n{}", run.exit, run.raw, tail(&server.log(), 30))
}

/// aiortc played: 201, connected, frames decoded in the window, DELETE 2xx.
fn assert_played(run: &WhepRun, server: &Server, what: &str) {
    let ctx = context(run, server);
    let post = run.event("post").unwrap_or_else(|| panic!("{what}: no POST made; {ctx}"));
    assert_eq!(post["status"], 201, "{what}: POST; {ctx}");
    assert_eq!(run.exit, Some(0), "{what}: whep_play.py ends well (connected, DELETE 2xx); {ctx}");
    let r = run.event("result").unwrap_or_else(|| panic!("{what}: no result; {ctx}"));
    let got = r["video"]["frames_in_window"].as_f64().unwrap_or(0.0);
    assert!(got >= MIN_FRAMES, "{what}: aiortc decoded {got} video frames in {} s, want >= {MIN_FRAMES}; {ctx}", r["window_s"]);
    eprintln!("{what}: {got} video frames decoded in {} s", r["window_s"]);
}

#[test]
fn whep_play_needs_a_play_token() {
    let _one = serial();
    if netns::reexec("whep_play_needs_a_play_token") {
        return;
    }
    let name = "tokplay";
    let secret_file = scratch_path("auth-secret", "txt");
    std::fs::write(&secret_file, SECRET).unwrap();
    let server = Server::start(&["--auth-secret", secret_file.to_str().unwrap(), "--auth", "play"]);
    // `--auth play`: ffmpeg publishes without a token.
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(name), 800);
    server.wait_stream_live(name, Duration::from_secs(10));
    let port = server.http_port;
    let url = format!("http://127.0.0.1:{port}/whep/{name}");

    // No token: 401 with a Bearer challenge; aiortc gives up on it.
    let (code, head, body) = whep_post(port, name, None);
    assert_eq!(code, 401, "no token: {head}\n{body}");
    assert_eq!(head_value(&head, "www-authenticate").as_deref(), Some("Bearer"), "the challenge: {head}");
    assert_eq!(body.trim(), "Restricted access: no token");
    let run = run_whep(&url, 1.0, &[], Duration::from_secs(20));
    assert_eq!(run.event("post").map(|p| p["status"].clone()), Some(401.into()), "aiortc without a token; {}", context(&run, &server));
    assert_eq!(run.exit, Some(2), "aiortc gives up on the 401; {}", context(&run, &server));

    // Tokens that do not allow playing this name, each refused with its reason.
    let now = unix_now();
    let refused = [
        ("a play token for another name", sign(SECRET, AuthAction::Play, "other", now + 60), "token is for another stream name"),
        ("a publish token for the name", sign(SECRET, AuthAction::Publish, name, now + 60), "token is for another action"),
        ("an expired play token", sign(SECRET, AuthAction::Play, name, now - 10), "token expired"),
        ("a play token signed with another secret", sign("not-the-server-secret-0123456789", AuthAction::Play, name, now + 60), "bad token signature"),
        ("a token that is not one", "garbage".to_string(), "malformed token"),
    ];
    for (what, token, reason) in &refused {
        let (code, head, body) = whep_post(port, name, Some(token));
        assert_eq!(code, 403, "{what}: {head}\n{body}");
        assert!(head_value(&head, "www-authenticate").is_none(), "{what}: no challenge with a 403: {head}");
        assert_eq!(body.trim(), format!("Restricted access: {reason}"), "{what}");
    }
    // aiortc with the token for another name sees the 403 too.
    let run = run_whep(&url, 1.0, &["--token", &refused[0].1], Duration::from_secs(20));
    assert_eq!(run.event("post").map(|p| p["status"].clone()), Some(403.into()), "aiortc with another name's token; {}", context(&run, &server));
    assert_eq!(play::webrtc_viewers(&server, name), Some(0), "no viewer from the refused offers: {:?}", server.stream(name));

    // A play token from `rtcbridge token`: 201 and frames.
    let good = cli_play_token(&secret_file, name);
    let run = run_whep(&url, WINDOW_SECS, &["--token", &good], Duration::from_secs(40));
    assert_played(&run, &server, "a good play token");

    let log = server.log();
    assert!(log.contains("denied: no token"), "the refusals are logged: {}", tail(&log, 30));
    assert!(!log.contains(&good), "a token was logged");
    assert!(publisher.is_running(), "the publisher stopped: {}", publisher.log());
}

/// The backend: every connect and publish allowed (ffmpeg's RTMP), play only of names
/// starting with "ok".
fn by_name(_path: &str, body: &serde_json::Value) -> Answer {
    match (body["action"].as_str(), body["name"].as_str().unwrap_or("")) {
        (Some("connect"), _) | (Some("publish"), _) => Answer::Status(200),
        (Some("play"), n) if n.starts_with("ok") => Answer::Status(200),
        _ => Answer::Status(403),
    }
}

#[test]
fn whep_play_asks_the_auth_hook() {
    let _one = serial();
    if netns::reexec("whep_play_asks_the_auth_hook") {
        return;
    }
    let backend = Backend::start(by_name);
    let server = Server::start(&["--auth-hook", &format!("{}/auth", backend.url)]);
    let (allowed, denied) = ("okwhep", "nowhep");
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(allowed), 800);
    server.wait_stream_live(allowed, Duration::from_secs(10));
    let port = server.http_port;

    // Denied: 403 "Restricted access" (not 404: the hook decides before the stream is looked up).
    let (code, head, body) = whep_post(port, denied, Some("some-token"));
    assert_eq!(code, 403, "the denied name: {head}\n{body}");
    assert_eq!(body.trim(), "Restricted access");
    let run = run_whep(&format!("http://127.0.0.1:{port}/whep/{denied}"), 1.0, &[], Duration::from_secs(20));
    assert_eq!(run.event("post").map(|p| p["status"].clone()), Some(403.into()), "aiortc on the denied name; {}", context(&run, &server));

    // Allowed: 201 and frames.
    let run = run_whep(&format!("http://127.0.0.1:{port}/whep/{allowed}"), WINDOW_SECS, &["--token", "hook-token-1"], Duration::from_secs(40));
    assert_played(&run, &server, "the hook-allowed name");

    let seen = backend.seen();
    assert!(seen.iter().all(|(p, _)| p == "/auth"), "{seen:?}");
    let plays = |name: &str| -> Vec<serde_json::Value> { seen.iter().map(|(_, b)| b).filter(|b| b["action"] == "play" && b["name"] == name).cloned().collect() };
    let ok = plays(allowed);
    assert_eq!(ok.len(), 1, "one play request for {allowed}: {seen:?}");
    let b = &ok[0];
    assert_eq!(b["protocol"], "whep", "{b}");
    assert_eq!(b["ip"], "127.0.0.1", "{b}");
    assert_eq!(b["token"], "hook-token-1", "the bearer token is passed on: {b}");
    let no = plays(denied);
    assert_eq!(no.len(), 2, "curl-like and aiortc play requests for {denied}: {seen:?}");
    assert!(no.iter().all(|b| b["protocol"] == "whep"), "{no:?}");
    assert_eq!(no[0]["token"], "some-token", "{no:?}");
    assert!(no[1]["token"].is_null(), "no token, none passed on: {no:?}");
    assert!(server.log().contains("play denied: hook denied: HTTP 403"), "{}", tail(&server.log(), 30));
    assert!(publisher.is_running(), "the publisher stopped: {}", publisher.log());
}

// ---- Flashphoner playStream (the SDK's Player page) -------------------------------------

/// The SDK's Player page plays `name`, with `{custom: {token}}` given to createSession when
/// there is a token; `steps` as in tests/js/play.mjs.
fn sdk_play(server: &Server, name: &str, token: Option<&str>, steps: &[&str]) -> PageRun {
    let custom = token.map(|t| serde_json::json!({ "token": t }).to_string());
    let extra: Vec<&str> = custom.as_deref().map(|c| vec!["--custom", c]).unwrap_or_default();
    run_page_with(Page::Player, server.http_port, name, None, &extra, steps, Duration::from_secs(60), |_| {})
}

fn page_context(run: &PageRun, server: &Server) -> String {
    format!("play.mjs:\n{}\nserver log tail:\n{}", run.brief(), tail(&server.log(), 30))
}

/// FAILED "Restricted access" and no video reached the page.
fn assert_sdk_refused(run: &PageRun, server: &Server, what: &str) {
    let ctx = page_context(run, server);
    let seq: Vec<String> = run.play_statuses().into_iter().filter(|s| s != "ESTABLISHED").collect();
    assert_eq!(seq, ["FAILED"], "{what}: #status; {ctx}");
    assert_eq!(run.last("#info").as_deref(), Some("Restricted access"), "{what}: #info; {ctx}");
    assert!(run.stats().iter().all(|(_, s)| s.get("video").is_none()), "{what}: video reached the page; {ctx}");
}

/// PLAYING, video decoded at half the source's rate or better, STOPPED after Stop.
fn assert_sdk_played(run: &PageRun, server: &Server, what: &str) {
    let ctx = page_context(run, server);
    assert!(run.aborted().is_none(), "{what}: every step reached its condition: {:?}; {ctx}", run.aborted());
    let seq: Vec<String> = run.play_statuses().into_iter().filter(|s| s != "ESTABLISHED").collect();
    assert_eq!(seq, ["PLAYING", "STOPPED"], "{what}: #status; {ctx}");
    let w = media_window(run, 1.0).unwrap_or_else(|| panic!("{what}: no window of getStats() samples with decoded video; {ctx}"));
    assert!(w.decoded_fps() >= 15.0, "{what}: {:.1} fps decoded from a 30 fps source: {}; {ctx}", w.decoded_fps(), w.describe());
    eprintln!("{what}: {:.1} fps decoded", w.decoded_fps());
}

const SDK_PLAY: [&str; 4] = ["play", "measure:3", "stop-play", "idle:1"];

#[test]
fn sdk_play_needs_a_play_token() {
    let _one = serial();
    if netns::reexec("sdk_play_needs_a_play_token") {
        return;
    }
    let name = "sdktok";
    let secret_file = scratch_path("auth-secret", "txt");
    std::fs::write(&secret_file, SECRET).unwrap();
    let server = Server::start(&["--auth-secret", secret_file.to_str().unwrap(), "--auth", "play"]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(name), 800);
    server.wait_stream_live(name, Duration::from_secs(10));

    let run = sdk_play(&server, name, None, &["play", "idle:1"]);
    assert_sdk_refused(&run, &server, "no token");
    let other = sign(SECRET, AuthAction::Play, "other", unix_now() + 60);
    let run = sdk_play(&server, name, Some(&other), &["play", "idle:1"]);
    assert_sdk_refused(&run, &server, "a play token for another name");
    assert_eq!(play::webrtc_viewers(&server, name), Some(0), "no viewer from the refused plays: {:?}", server.stream(name));

    let good = cli_play_token(&secret_file, name);
    let run = sdk_play(&server, name, Some(&good), &SDK_PLAY);
    assert_sdk_played(&run, &server, "a good play token");

    let log = server.log();
    for reason in ["denied: no token", "denied: token is for another stream name"] {
        assert!(log.contains(reason), "the refusal is logged with its reason ({reason}): {}", tail(&log, 30));
    }
    assert!(!log.contains(&good) && !log.contains(&other), "a token was logged");
    assert!(publisher.is_running(), "the publisher stopped: {}", publisher.log());
}

#[test]
fn sdk_play_asks_the_auth_hook() {
    let _one = serial();
    if netns::reexec("sdk_play_asks_the_auth_hook") {
        return;
    }
    let backend = Backend::start(by_name);
    let server = Server::start(&["--auth-hook", &format!("{}/auth", backend.url)]);
    let (allowed, denied) = ("oksdk", "nosdk");
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(allowed), 800);
    server.wait_stream_live(allowed, Duration::from_secs(10));

    let run = sdk_play(&server, denied, Some("hook-token-2"), &["play", "idle:1"]);
    assert_sdk_refused(&run, &server, "the hook-denied name");
    let run = sdk_play(&server, allowed, Some("hook-token-3"), &SDK_PLAY);
    assert_sdk_played(&run, &server, "the hook-allowed name");

    let seen = backend.seen();
    let plays = |name: &str| -> Vec<serde_json::Value> { seen.iter().map(|(_, b)| b).filter(|b| b["action"] == "play" && b["name"] == name).cloned().collect() };
    for (name, token) in [(allowed, "hook-token-3"), (denied, "hook-token-2")] {
        let asked = plays(name);
        assert_eq!(asked.len(), 1, "one play request for {name}: {seen:?}");
        let b = &asked[0];
        assert_eq!(b["protocol"], "webrtc", "{b}");
        assert_eq!(b["ip"], "127.0.0.1", "{b}");
        assert_eq!(b["token"], token, "the token is passed on: {b}");
        assert_eq!(b["custom"]["token"], token, "the SDK's custom is passed on: {b}");
    }
    assert!(seen.iter().any(|(_, b)| b["action"] == "connect" && b["protocol"] == "webrtc"), "the Flashphoner connection was asked about: {seen:?}");
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains(denied) && l.contains("play") && l.contains("denied: hook denied: HTTP 403")),
        "the refusal is logged with the name and the reason: {}",
        tail(&log, 30)
    );
    assert!(publisher.is_running(), "the publisher stopped: {}", publisher.log());
}
