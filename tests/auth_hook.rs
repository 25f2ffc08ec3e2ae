//! `--auth-hook URL`: a backend started by the test allows names starting with "ok" and
//! denies the rest; each client sees the refusal its way (ffmpeg and RtmpClient
//! NetStream.Publish.BadName, WHIP 403, Flashphoner FAILED "Restricted access"). A hook
//! that hangs or is down denies within its timeout while another stream plays on.
mod common;

use common::hookd::{Answer, Backend};
use common::hostile::Innocent;
use common::signal::{offer, publish_answer, whip_post, WsClient};
use common::*;
use std::time::{Duration, Instant};

fn by_name(_path: &str, body: &serde_json::Value) -> Answer {
    let name = body["name"].as_str().unwrap_or("");
    match body["action"].as_str() {
        Some("connect") => Answer::Status(204),
        _ if name.starts_with("ok") => Answer::Status(200),
        _ if name.starts_with("hang") => Answer::Hang,
        _ => Answer::Status(403),
    }
}

fn rtmp_publish_status(port: u16, name: &str) -> String {
    let mut c = RtmpClient::connect(port);
    c.connect_app("live");
    let id = c.create_stream();
    c.publish(id, name);
    let (_, rec) = c
        .wait_event(0, Duration::from_secs(5), |e| e.status().is_some_and(|s| s.starts_with("NetStream.Publish.")))
        .unwrap_or_else(|| panic!("no publish status: {}", c.describe()));
    rec.status().unwrap().to_owned()
}

#[test]
fn hook_allows_and_denies_per_name() {
    let backend = Backend::start(by_name);
    let server = Server::start(&["--auth-hook", &format!("{}/auth", backend.url)]);

    // RTMP: ffmpeg publishes the allowed name; the denied one is refused.
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url("ok-cam"), 800);
    server.wait_stream_live("ok-cam", Duration::from_secs(15));
    let (ok, err) = try_publish(&server.rtmp_url("bad-cam"));
    assert!(!ok, "a denied publish was accepted");
    assert!(err.contains("Restricted access"), "ffmpeg should show the refusal: {err}");
    assert_eq!(rtmp_publish_status(server.rtmp_port, "bad-raw"), "NetStream.Publish.BadName");
    // RTMP play: the allowed name plays, the denied one gets NetStream.Play.Failed.
    let player = LivePlayer::start("allowed player", &server.rtmp_url("ok-cam"), 30.0);
    wait_for(Duration::from_secs(10), "the allowed player's frames", || player.video_frames() >= 15);
    let mut c = RtmpClient::connect(server.rtmp_port);
    c.connect_app("live");
    let id = c.create_stream();
    c.play(id, "bad-play");
    c.wait_status(0, "NetStream.Play.Failed", Duration::from_secs(5));

    // WHIP: 201 / 403.
    let (status, body, _) = whip_post(server.http_port, "ok-w", &offer(true));
    assert_eq!(status, 201, "{body}");
    let (status, body, _) = whip_post(server.http_port, "bad-w", &offer(true));
    assert_eq!(status, 403, "{body}");

    // Flashphoner: FAILED "Restricted access" / the SDP answer.
    let mut ws = WsClient::connect(server.http_port);
    ws.send("connection", serde_json::json!({"appKey": "defaultApp", "custom": {"user": "u1"}}));
    ws.wait_for("getUserData", Duration::from_secs(5));
    let m = publish_answer(&mut ws, "m1", "bad-fp", serde_json::json!({"room": "r1"}));
    assert_eq!(m["message"], "notifyStreamStatusEvent", "{m}");
    assert_eq!(m["data"][0]["status"], "FAILED");
    assert_eq!(m["data"][0]["info"], "Restricted access");
    let m = publish_answer(&mut ws, "m2", "ok-fp", serde_json::json!({"room": "r1"}));
    assert_eq!(m["message"], "setRemoteSDP", "{m}");

    // What the backend saw.
    let seen = backend.seen();
    let find = |proto: &str, name: &str| {
        seen.iter()
            .map(|(_, b)| b)
            .find(|b| b["protocol"] == proto && b["name"] == name)
            .unwrap_or_else(|| panic!("no {proto} request for {name}: {seen:?}"))
            .clone()
    };
    assert!(seen.iter().all(|(p, _)| p == "/auth"), "{seen:?}");
    let b = find("rtmp", "ok-cam");
    assert_eq!(b["action"], "publish");
    assert_eq!(b["ip"], "127.0.0.1");
    assert_eq!(b["app"], "live");
    let b = seen.iter().map(|(_, b)| b).find(|b| b["action"] == "connect").expect("a connect request");
    assert_eq!(b["protocol"], "rtmp");
    assert_eq!(b["app"], "live");
    assert_eq!(find("whip", "bad-w")["action"], "publish");
    assert_eq!(find("rtmp", "bad-play")["action"], "play");
    let b = find("webrtc", "bad-fp");
    assert_eq!(b["custom"]["room"], "r1");
    assert_eq!(b["ip"], "127.0.0.1");

    let log = server.log();
    assert!(log.contains("publish \"bad-cam\" denied: hook denied: HTTP 403 (NetStream.Publish.BadName)"), "{log}");
    assert!(log.contains("denied: hook denied: HTTP 403"), "{log}");
    assert!(publisher.is_running(), "the allowed publisher stopped: {}", publisher.log());
}

#[test]
fn hook_that_hangs_or_is_down_denies_in_time() {
    let backend = Backend::start(by_name);
    let server = Server::start(&["--auth-hook", &backend.url, "--auth-hook-timeout", "2"]);
    let mut innocent = Innocent::start(&server, "ok-innocent");

    // Hanging requests, from another thread while the innocent player is measured.
    let (rtmp, http) = (server.rtmp_port, server.http_port);
    let attempts = std::thread::spawn(move || {
        let t = Instant::now();
        let rtmp_status = rtmp_publish_status(rtmp, "hang-1");
        let rtmp_took = t.elapsed();
        let t = Instant::now();
        let (whip_status, _, _) = whip_post(http, "hang-2", &offer(true));
        (rtmp_status, rtmp_took, whip_status, t.elapsed())
    });
    innocent.assert_unharmed(Duration::from_secs(4), "while the hook hangs");
    let (rtmp_status, rtmp_took, whip_status, whip_took) = attempts.join().unwrap();
    assert_eq!(rtmp_status, "NetStream.Publish.BadName");
    assert!(rtmp_took <= Duration::from_secs(3), "RTMP denial took {rtmp_took:?}");
    assert_eq!(whip_status, 403);
    assert!(whip_took <= Duration::from_secs(3), "WHIP denial took {whip_took:?}");
    assert!(server.log().contains("denied: hook timed out after 2 s"), "{}", server.log());

    // A hook that is down: connect refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = Server::start(&["--auth-hook", &format!("http://{closed}/"), "--auth-hook-timeout", "2"]);
    let t = Instant::now();
    let (status, _, _) = whip_post(down.http_port, "ok-down", &offer(true));
    assert_eq!(status, 403);
    assert!(t.elapsed() <= Duration::from_secs(3), "denial took {:?}", t.elapsed());
    let c = RtmpClient::connect(down.rtmp_port);
    let obj = c.connect_object("live", &[]);
    c.send_command(0, false, &[Amf::str("connect"), Amf::Number(1.0), obj]);
    c.wait_event(0, Duration::from_secs(3), |e| matches!(&e.event, Event::Command { name, .. } if name == "_error"))
        .unwrap_or_else(|| panic!("connect not rejected: {}", c.describe()));
    assert!(c.describe().contains("NetConnection.Connect.Rejected"), "{}", c.describe());
    assert!(down.log().contains("hook unreachable:"), "{}", down.log());
    innocent.assert_unharmed(Duration::from_secs(1), "after the hook tests");
}
