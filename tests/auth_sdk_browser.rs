//! Tokens with the real Flashphoner Web SDK: its Two Way Streaming page in headless
//! Chromium, with `createSession({custom: {token}})` (publish.mjs --custom). No token: the
//! page shows FAILED; a good token: PUBLISHING.
mod common;

use common::browser::{run_browser_at, status_seq};
use common::{netns, scratch_path, Server};
use rtcbridge::relay::auth::{AuthAction, TokenClaims, TokenKey};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "sdk-browser-secret-0123456789ab";

#[test]
fn flashphoner_sdk_page_publishes_only_with_a_token() {
    if netns::reexec("flashphoner_sdk_page_publishes_only_with_a_token") {
        return;
    }
    let secret = scratch_path("auth-secret", "txt");
    std::fs::write(&secret, SECRET).unwrap();
    let server = Server::start(&["--auth-secret", secret.to_str().unwrap()]);
    let http = format!("http://127.0.0.1:{}", server.http_port);
    let ws = format!("ws://127.0.0.1:{}/", server.http_port);

    let (evs, raw) = run_browser_at(&http, &ws, &[], "sdk", "sdk-auth", 2, |_| {});
    let seq = status_seq(&evs, "#publishStatus");
    assert!(seq.contains(&"FAILED".to_string()), "without a token the page should show FAILED: {seq:?}\n{raw}\n{}", server.log());
    assert!(!seq.contains(&"PUBLISHING".to_string()), "published without a token: {seq:?}");

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = TokenKey::from_file_bytes(SECRET.as_bytes()).unwrap().sign(&TokenClaims { action: AuthAction::Publish, name: "sdk-auth".into(), expires_unix: now + 120, ip: None });
    let custom = serde_json::json!({ "token": token }).to_string();
    let (evs, raw) = run_browser_at(&http, &ws, &["--custom", &custom], "sdk", "sdk-auth", 3, |_| {});
    let seq = status_seq(&evs, "#publishStatus");
    assert!(seq.contains(&"PUBLISHING".to_string()), "never PUBLISHING with a token: {seq:?}\n{raw}\n{}", server.log());
    assert!(!server.log().contains(&token), "a token was logged");
}
