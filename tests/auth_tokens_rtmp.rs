//! Signed tokens with RTMP clients: ffmpeg publishing and playing with `?token=`, and
//! rtmpdump carrying the token in Flash's connect object. No token, an expired one, one
//! for another name or the other action are refused with the status each client shows;
//! a good one works.
mod common;

use common::*;
use rtcbridge::relay::auth::{AuthAction, TokenClaims, TokenKey};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789\n";

fn secret_file() -> PathBuf {
    let p = scratch_path("auth-secret", "txt");
    std::fs::write(&p, SECRET).unwrap();
    p
}

fn unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token signed in the test (for the cases the CLI will not make, like expired ones).
fn signed(action: AuthAction, name: &str, expires_unix: u64, secret: &str) -> String {
    TokenKey::from_file_bytes(secret.as_bytes()).unwrap().sign(&TokenClaims { action, name: name.into(), expires_unix, ip: None })
}

/// `rtcbridge token --secret FILE --publish|--play NAME --ttl 1h`.
fn cli_token(secret: &Path, action: &str, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rtcbridge"))
        .args(["token", "--secret"])
        .arg(secret)
        .args([&format!("--{action}"), name, "--ttl", "1h"])
        .output()
        .expect("run rtcbridge token");
    assert!(out.status.success(), "rtcbridge token failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A short ffmpeg play attempt; returns (decoded video frames, stderr).
fn try_play(url: &str, secs: f64) -> (usize, String) {
    let out = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-nostdin", "-v", "error", "-rw_timeout", "5000000", "-i", url, "-t", &secs.to_string()])
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    let frames = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).count();
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn rtmpdump(url: &str, connect_token: Option<&str>, secs: u64) -> (u64, String) {
    let flv = scratch_path("rtmpdump", "flv");
    let err = scratch_path("rtmpdump", "err");
    let mut cmd = Command::new(tool("rtmpdump"));
    cmd.args(["-r", url, "-v", "-m", "10"]);
    if let Some(t) = connect_token {
        cmd.args(["-C", "O:1", "-C", "NS:login:user", "-C", &format!("NS:token:{t}"), "-C", "O:0"]);
    }
    cmd.arg("-o").arg(&flv).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::from(std::fs::File::create(&err).unwrap()));
    let mut dump = ChildGuard::new("rtmpdump", cmd.spawn().expect("start rtmpdump"));
    let _ = wait_child(&mut dump.child, Duration::from_secs(secs)).or_else(|| end_child(&mut dump.child, "INT", Duration::from_secs(3)));
    (std::fs::metadata(&flv).map(|m| m.len()).unwrap_or(0), read_file_lossy(&err))
}

#[test]
fn rtmp_publish_and_play_need_the_right_token() {
    let secret = secret_file();
    let server = Server::start(&["--auth-secret", secret.to_str().unwrap()]);
    let base = server.rtmp_url("cam");

    // Publish: refused without a token, with an expired one, one for another name, one
    // for playing, one signed with another secret.
    let refusals = [
        ("no token", base.clone()),
        ("token expired", format!("{base}?token={}", signed(AuthAction::Publish, "cam", unix() - 5, SECRET))),
        ("another stream name", format!("{base}?token={}", cli_token(&secret, "publish", "other"))),
        ("another action", format!("{base}?token={}", cli_token(&secret, "play", "cam"))),
        ("bad token signature", format!("{base}?token={}", signed(AuthAction::Publish, "cam", unix() + 60, "a different secret, 16+ bytes"))),
    ];
    for (why, url) in &refusals {
        let (ok, err) = try_publish(url);
        assert!(!ok, "publish with {why} was accepted");
        assert!(err.contains("Restricted access"), "ffmpeg should show the refusal ({why}): {err}");
    }
    let log = server.log();
    assert!(log.contains("publish \"cam\" denied: no token (NetStream.Publish.BadName)"), "{log}");
    assert!(log.contains("denied: token expired"), "{log}");
    assert!(log.contains("denied: token is for another stream name"), "{log}");
    assert!(log.contains("denied: token is for another action"), "{log}");
    // The log names the reason, never the token.
    assert!(!log.contains("rtb1."), "a token was logged:\n{log}");
    assert!(server.streams().is_empty(), "a refused publisher is live");

    // A good token (from `rtcbridge token`), prefix form: publishes.
    let publish = cli_token(&secret, "publish", "ca*");
    let mut publisher = Publisher::ffmpeg(&format!("{base}?token={publish}"), 800);
    server.wait_stream_live("cam", Duration::from_secs(15));

    // Play: refused without a token, with the publish token, with a play token for
    // another name; NetStream.Play.Failed as ffmpeg shows it.
    for (why, url) in [
        ("no token", base.clone()),
        ("the publish token", format!("{base}?token={publish}")),
        ("another name", format!("{base}?token={}", cli_token(&secret, "play", "other"))),
    ] {
        let (frames, err) = try_play(&url, 2.0);
        assert_eq!(frames, 0, "play with {why} got frames");
        assert!(err.contains("Restricted access"), "ffmpeg should show the refusal ({why}): {err}");
    }
    assert!(server.log().contains("(NetStream.Play.Failed)"));
    let play = cli_token(&secret, "play", "cam");
    let (frames, err) = try_play(&format!("{base}?token={play}"), 3.0);
    assert!(frames >= 30, "good play token: {frames} frames; {err}");

    // rtmpdump with the token in Flash's connect object ({login, token}).
    let (size, log) = rtmpdump(&base, Some(&play), 4);
    assert!(size > 50_000, "rtmpdump with a good connect token wrote {size} bytes:\n{log}");
    let (size, log) = rtmpdump(&base, None, 4);
    assert!(size < 5_000, "rtmpdump without a token wrote {size} bytes");
    assert!(log.contains("NetStream.Play.Failed"), "rtmpdump should see Play.Failed:\n{log}");
    // A forged connect token: the connection itself is refused.
    let forged = signed(AuthAction::Play, "cam", unix() + 60, "a different secret, 16+ bytes");
    let (size, _log) = rtmpdump(&base, Some(&forged), 4);
    assert!(size < 5_000, "rtmpdump with a forged connect token wrote {size} bytes");
    assert!(server.log().contains("rejected: bad token signature (NetConnection.Connect.Rejected)"), "{}", server.log());
    let expired = signed(AuthAction::Play, "cam", unix() - 1, SECRET);
    let (frames, err) = try_play(&format!("{base}?token={expired}"), 2.0);
    assert_eq!(frames, 0);
    assert!(err.contains("Restricted access"), "{err}");
    assert!(publisher.is_running(), "the publisher was disturbed: {}", publisher.log());
}

#[test]
fn auth_publish_only_leaves_play_open() {
    let secret = secret_file();
    let server = Server::start(&["--auth-secret", secret.to_str().unwrap(), "--auth", "publish"]);
    let base = server.rtmp_url("open");
    let (ok, err) = try_publish(&base);
    assert!(!ok && err.contains("Restricted access"), "{err}");
    let _publisher = Publisher::ffmpeg(&format!("{base}?token={}", cli_token(&secret, "publish", "open")), 800);
    server.wait_stream_live("open", Duration::from_secs(15));
    let (frames, err) = try_play(&base, 2.0);
    assert!(frames >= 20, "open play: {frames} frames; {err}");
}
