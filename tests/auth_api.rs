//! The HTTP API behind bearer tokens (`--api-token`, `--metrics-token`), `/healthz` open;
//! WebSocket upgrades and WHIP CORS follow `--allowed-origin`.
mod common;

use common::signal::{head_value, http_raw};
use common::*;

fn token_file(content: &str) -> String {
    let p = scratch_path("token", "txt");
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn api_and_metrics_need_their_tokens() {
    let api = token_file("api-secret-1\n");
    let metrics = token_file("metrics-secret-2");
    let server = Server::start(&["--api-token", &api, "--metrics-token", &metrics]);
    let p = server.http_port;
    let get = |path: &str, auth: Option<&str>| {
        let h = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        http_raw(p, "GET", path, &h, "")
    };
    let (status, head, _) = get("/api/streams", None);
    assert_eq!(status, 401);
    assert_eq!(head_value(&head, "www-authenticate").as_deref(), Some("Bearer"));
    assert_eq!(get("/api/streams", Some("wrong")).0, 401);
    assert_eq!(get("/api/streams", Some("metrics-secret-2")).0, 401, "the metrics token is not the API token");
    let (status, _, body) = get("/api/streams", Some("api-secret-1"));
    assert_eq!(status, 200);
    assert!(body.contains("\"streams\""), "{body}");
    assert_eq!(get("/metrics", None).0, 401);
    assert_eq!(get("/metrics", Some("metrics-secret-2")).0, 200);
    assert_eq!(get("/healthz", None).0, 200);
}

#[test]
fn metrics_open_without_its_token_and_origins_checked() {
    let server = Server::start(&["--allowed-origin", "https://app.example"]);
    let p = server.http_port;
    assert_eq!(http_raw(p, "GET", "/metrics", "", "").0, 200);
    assert_eq!(http_raw(p, "GET", "/api/streams", "", "").0, 200, "no --api-token: open");
    // The status line of an upgrade (the connection stays open on 101: read the head only).
    let upgrade = |origin: &str| -> u16 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        String::from_utf8_lossy(&buf).get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
    };
    assert_eq!(upgrade("Origin: https://evil.example\r\n"), 403);
    assert_eq!(upgrade("Origin: https://app.example\r\n"), 101);
    assert_eq!(upgrade(""), 101, "non-browser clients send no Origin");
    let (_, head, _) = http_raw(p, "OPTIONS", "/whip/x", "Origin: https://app.example\r\n", "");
    assert_eq!(head_value(&head, "access-control-allow-origin").as_deref(), Some("https://app.example"));
    let (_, head, _) = http_raw(p, "OPTIONS", "/whip/x", "Origin: https://evil.example\r\n", "");
    assert_eq!(head_value(&head, "access-control-allow-origin"), None);
    // The log line is written by the logger thread: wait for it rather than race it.
    server.wait_log_line(std::time::Duration::from_secs(3), "the refused Origin in the log", |l| l.contains("not in --allowed-origin"));
}
