//! `--auth-hook-wcs URL`: a backend written for Flashphoner Web Call Server's REST hooks
//! (echo the body with 200 to allow, 403 to deny; here: 403 unless `custom.token` is
//! "good") admits and refuses Flashphoner publishes and Flash-style RTMP connects.
mod common;

use common::hookd::{Answer, Backend};
use common::signal::{publish_answer, WsClient};
use common::*;
use std::time::Duration;

fn wcs(_path: &str, body: &serde_json::Value) -> Answer {
    if body["custom"]["token"] == "good" {
        Answer::Status(200)
    } else {
        Answer::Status(403)
    }
}

#[test]
fn wcs_backend_admits_and_refuses_flashphoner_publishes() {
    let backend = Backend::start(wcs);
    let server = Server::start(&["--auth-hook-wcs", &format!("{}/rest-hook", backend.url)]);

    let mut ws = WsClient::connect(server.http_port);
    ws.send("connection", serde_json::json!({"appKey": "defaultApp", "custom": {"token": "good"}}));
    ws.wait_for("getUserData", Duration::from_secs(5));
    let m = publish_answer(&mut ws, "m1", "room1", serde_json::json!({"token": "bad"}));
    assert_eq!(m["message"], "notifyStreamStatusEvent", "{m}");
    assert_eq!(m["data"][0]["status"], "FAILED");
    assert_eq!(m["data"][0]["info"], "Restricted access");
    let m = publish_answer(&mut ws, "m2", "room1", serde_json::json!({"token": "good"}));
    assert_eq!(m["message"], "setRemoteSDP", "{m}");

    // A connection the backend refuses: `fail` and the socket closed.
    let mut bad = WsClient::connect(server.http_port);
    bad.send("connection", serde_json::json!({"appKey": "defaultApp", "custom": {"token": "nope"}}));
    let m = bad.wait_for("fail", Duration::from_secs(5));
    assert_eq!(m["data"][0]["info"], "Restricted access");

    let seen = backend.seen();
    let connect = seen.iter().find(|(p, _)| p == "/rest-hook/connect").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(connect.1["appKey"], "defaultApp");
    assert_eq!(connect.1["custom"]["token"], "good");
    let stream = seen.iter().find(|(p, b)| p == "/rest-hook/publishStream" && b["mediaSessionId"] == "m2").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(stream.1["name"], "room1");
    assert_eq!(stream.1["custom"]["token"], "good");
    assert!(stream.1.get("sdp").is_none(), "the SDP is not sent to the backend");
    assert!(server.log().contains("denied: hook denied: HTTP 403"), "{}", server.log());
}

#[test]
fn wcs_backend_admits_and_refuses_flash_rtmp_connects() {
    let backend = Backend::start(wcs);
    let server = Server::start(&["--auth-hook-wcs", &backend.url]);
    let connect = |token: &str| {
        let c = RtmpClient::connect(server.rtmp_port);
        let obj = c.connect_object("live", &[]);
        let flash = Amf::obj(&[("login", Amf::str("user")), ("appKey", Amf::str("flashStreamingApp")), ("token", Amf::str(token))]);
        c.send_command(0, false, &[Amf::str("connect"), Amf::Number(1.0), obj, flash]);
        c
    };

    // Refused: NetConnection.Connect.Rejected.
    let c = connect("bad");
    c.wait_event(0, Duration::from_secs(5), |e| matches!(&e.event, Event::Command { name, .. } if name == "_error"))
        .unwrap_or_else(|| panic!("connect not rejected: {}", c.describe()));
    assert!(c.describe().contains("NetConnection.Connect.Rejected"), "{}", c.describe());

    // Admitted: connect, then publish (asked on /publishStream with the same custom).
    let mut c = connect("good");
    c.wait_result(1.0, Duration::from_secs(5), "connect");
    let id = c.create_stream();
    c.publish(id, "flashcam");
    c.wait_status(0, "NetStream.Publish.Start", Duration::from_secs(5));

    let seen = backend.seen();
    let b = seen.iter().find(|(p, b)| p == "/connect" && b["custom"]["token"] == "good").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(b.1["appKey"], "flashStreamingApp");
    assert_eq!(b.1["login"], "user");
    assert_eq!(b.1["app"], "live");
    let p = seen.iter().find(|(p, _)| p == "/publishStream").unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(p.1["name"], "flashcam");
    assert!(server.log().contains("rejected: hook denied: HTTP 403 (NetConnection.Connect.Rejected)"), "{}", server.log());
}
