//! Tokens with a WebRTC peer we did not write: aiortc over WHIP with `Authorization:
//! Bearer` (tests/py/whip_publish.py --token). No token: the POST is refused with 401 and
//! aiortc gives up; a good token: it publishes and the stream goes live.
mod common;

use common::{netns, scratch_path, tool, Server};
use rtcbridge::relay::auth::{AuthAction, TokenClaims, TokenKey};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "aiortc-secret-0123456789abcdef";

fn token(name: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    TokenKey::from_file_bytes(SECRET.as_bytes()).unwrap().sign(&TokenClaims { action: AuthAction::Publish, name: name.into(), expires_unix: now + 60, ip: None })
}

fn aiortc(args: &[&str]) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("py").join("whip_publish.py");
    let out = Command::new(tool("python3")).arg(&script).args(args).output().expect("run aiortc (pip install aiortc: tools/test-all)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn aiortc_whip_needs_a_bearer_token() {
    if netns::reexec("aiortc_whip_needs_a_bearer_token") {
        return;
    }
    let secret = scratch_path("auth-secret", "txt");
    std::fs::write(&secret, SECRET).unwrap();
    let server = Server::start(&["--auth-secret", secret.to_str().unwrap()]);
    let url = format!("http://127.0.0.1:{}/whip/aio", server.http_port);

    let (ok, text) = aiortc(&[&url, "2"]);
    assert!(!ok, "aiortc published without a token: {text}");
    assert!(text.contains("\"status\": 401"), "aiortc should see 401: {text}");
    let (ok, text) = aiortc(&["--token", &token("other"), &url, "2"]);
    assert!(!ok && text.contains("\"status\": 403"), "a token for another name: {text}");

    let good = token("aio");
    let port = server.http_port;
    let poller = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok((200, body)) = common::http_get(port, "/api/streams") {
                if body.contains("\"aio\"") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    let (ok, text) = aiortc(&["--token", &good, &url, "4"]);
    assert!(ok, "aiortc with a good token failed: {text}\n{}", server.log());
    assert!(text.contains("\"state\": \"connected\""), "{text}");
    assert!(poller.join().unwrap(), "aio never live\n{}", server.log());
    assert!(!server.log().contains(&good), "a token was logged");
}
