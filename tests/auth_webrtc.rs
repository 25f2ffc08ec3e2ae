//! Signed tokens on the WebRTC side: WHIP `Authorization: Bearer` (401 without a token,
//! 403 with a wrong one, 201 with a good one) and the Flashphoner protocol (`custom.token`
//! on publishStream or the connection's `authToken`; FAILED "Restricted access").
//! Offers only: no media flows, so no network namespace is needed.
mod common;

use common::signal::{http_raw, offer, WsClient};
use common::*;
use rtcbridge::relay::auth::{AuthAction, TokenClaims, TokenKey};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "webrtc-secret-0123456789abcdef";

fn token(action: AuthAction, name: &str, ttl: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    TokenKey::from_file_bytes(SECRET.as_bytes()).unwrap().sign(&TokenClaims { action, name: name.into(), expires_unix: (now + ttl) as u64, ip: None })
}

fn server() -> Server {
    let p = scratch_path("auth-secret", "txt");
    std::fs::write(&p, SECRET).unwrap();
    Server::start(&["--auth-secret", p.to_str().unwrap()])
}

fn whip(port: u16, name: &str, bearer: Option<&str>) -> (u16, String) {
    let h = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let (status, _, body) = http_raw(port, "POST", &format!("/whip/{name}"), &format!("Content-Type: application/sdp\r\n{h}"), &offer(true));
    (status, body)
}

#[test]
fn whip_needs_a_bearer_token() {
    let server = server();
    let p = server.http_port;
    assert_eq!(whip(p, "w", None).0, 401);
    assert_eq!(whip(p, "w", Some("garbage")).0, 403);
    assert_eq!(whip(p, "w", Some(&token(AuthAction::Publish, "w", -1))).0, 403, "expired");
    assert_eq!(whip(p, "w", Some(&token(AuthAction::Publish, "other", 60))).0, 403, "other name");
    assert_eq!(whip(p, "w", Some(&token(AuthAction::Play, "w", 60))).0, 403, "other action");
    let (status, body) = whip(p, "w", Some(&token(AuthAction::Publish, "w", 60)));
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("a=ice-ufrag:"));
    let log = server.log();
    assert!(log.contains("publish \"w\" denied: no token"), "{log}");
    assert!(log.contains("publish \"w\" denied: token expired"), "{log}");
    assert!(!log.contains("rtb1."), "a token was logged");
}

#[test]
fn flashphoner_publish_needs_a_token() {
    let server = server();
    let publish = |ws: &mut WsClient, id: &str, name: &str, custom: serde_json::Value| {
        ws.send(
            "publishStream",
            serde_json::json!({"mediaSessionId": id, "name": name, "hasVideo": true, "hasAudio": true, "sdp": offer(true), "custom": custom}),
        );
    };
    // No token anywhere: FAILED "Restricted access".
    let mut ws = WsClient::connect(server.http_port);
    ws.send("connection", serde_json::json!({"appKey": "defaultApp"}));
    ws.wait_for("getUserData", Duration::from_secs(5));
    publish(&mut ws, "m1", "fp", serde_json::json!({}));
    let m = ws.wait_for("notifyStreamStatusEvent", Duration::from_secs(5));
    assert_eq!(m["data"][0]["status"], "FAILED");
    assert_eq!(m["data"][0]["info"], "Restricted access");
    // A token for another name in custom: refused the same way.
    publish(&mut ws, "m2", "fp", serde_json::json!({"token": token(AuthAction::Publish, "nope", 60)}));
    let m = ws.wait_for("notifyStreamStatusEvent", Duration::from_secs(5));
    assert_eq!(m["data"][0]["info"], "Restricted access");
    // createStream({custom: {token}}): accepted (the SDP answer comes back).
    publish(&mut ws, "m3", "fp", serde_json::json!({"token": token(AuthAction::Publish, "fp", 60)}));
    let m = ws.wait_for("setRemoteSDP", Duration::from_secs(5));
    assert_eq!(m["data"][0], "m3");

    // The token on the connection (createSession({custom: {token}})) covers its publishes.
    let mut ws2 = WsClient::connect(server.http_port);
    ws2.send("connection", serde_json::json!({"appKey": "defaultApp", "custom": {"token": token(AuthAction::Publish, "fp2", 60)}}));
    ws2.wait_for("getUserData", Duration::from_secs(5));
    publish(&mut ws2, "n1", "fp2", serde_json::Value::Null);
    ws2.wait_for("setRemoteSDP", Duration::from_secs(5));
    assert!(server.log().contains("publish \"fp\" denied: no token"));
}
