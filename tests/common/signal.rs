//! A minimal WebSocket client speaking the Flashphoner-compatible messages,
//! and WHIP over plain HTTP, written for the tests independently of the
//! server's code. Plus hand-written SDP offers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct WsClient {
    s: TcpStream,
    buf: Vec<u8>,
}

impl WsClient {
    pub fn connect(port: u16) -> WsClient {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect ws");
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut c = WsClient { s, buf: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&c.buf[..p]).to_string();
                assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
                assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "RFC 6455 accept key: {head}");
                c.buf.drain(..p + 4);
                break;
            }
            assert!(Instant::now() < deadline, "no upgrade response");
            c.fill();
        }
        c
    }

    fn fill(&mut self) {
        let mut b = [0u8; 8192];
        match self.s.read(&mut b) {
            Ok(0) => panic!("server closed the websocket"),
            Ok(n) => self.buf.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
    }

    pub fn send(&mut self, message: &str, data: serde_json::Value) {
        let text = serde_json::json!({ "message": message, "data": [data] }).to_string();
        let p = text.as_bytes();
        let key = [0x11u8, 0x22, 0x33, 0x44];
        let mut f = vec![0x81u8];
        if p.len() < 126 {
            f.push(0x80 | p.len() as u8);
        } else if p.len() < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(p.len() as u64).to_be_bytes());
        }
        f.extend_from_slice(&key);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.s.write_all(&f).unwrap();
    }

    /// Next text message as JSON, or None at the deadline.
    pub fn recv(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let mut len = (self.buf[1] & 0x7f) as usize;
                let mut off = 2;
                if len == 126 && self.buf.len() >= 4 {
                    len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
                    off = 4;
                } else if len == 127 && self.buf.len() >= 10 {
                    len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize;
                    off = 10;
                }
                if self.buf.len() >= off + len && !(len >= 126 && off == 2) {
                    let payload: Vec<u8> = self.buf[off..off + len].to_vec();
                    self.buf.drain(..off + len);
                    if op == 1 {
                        return serde_json::from_slice(&payload).ok();
                    }
                    continue;
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            self.fill();
        }
    }

    /// Wait for a message named `name` (answering pings), up to `timeout`.
    pub fn wait_for(&mut self, name: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(m) = self.recv(deadline.saturating_duration_since(Instant::now())) {
                if m["message"] == name {
                    return m;
                }
                if m["message"] == "ping" {
                    self.send("pong", serde_json::Value::Null);
                }
            }
        }
        panic!("no {name} message within {timeout:?}");
    }
}

/// A WebRTC publish offer as a browser would write it (no candidates), with
/// H.264 (or only VP8 when `h264` is false) and Opus.
pub fn offer(h264: bool) -> String {
    let video_fmt = if h264 {
        "a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    } else {
        "a=rtpmap:102 VP8/90000\r\na=rtcp-fb:102 nack\r\n"
    };
    let fp = "sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3D:2A:5C:7F:0B:52:0F:6E:1A:D8:4C:0B";
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=msid-semantic: WMS s\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:{fp}\r\na=setup:actpass\r\n\
         a=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
         a=ssrc:1001 cname:test\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:{fp}\r\na=setup:actpass\r\n\
         a=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n{video_fmt}a=ssrc:1002 cname:test\r\n"
    )
}

/// POST an offer to /whip/NAME; returns (status, body, location header).
pub fn whip_post(port: u16, name: &str, sdp: &str) -> (u16, String, Option<String>) {
    let (status, head, body) = http_raw(port, "POST", &format!("/whip/{name}"), "Content-Type: application/sdp\r\n", sdp);
    let loc = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("location:"))
        .map(|l| l[9..].trim().to_owned());
    (status, body, loc)
}

/// One HTTP/1.1 request with the given extra header lines (each ending in "\r\n") and
/// body; returns (status, head, body).
pub fn http_raw(port: u16, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

/// The value of header `name` in a response head.
pub fn head_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// `publishStream` with `custom`, then the server's answer to it: the `setRemoteSDP`
/// (accepted) or a `notifyStreamStatusEvent` (refused).
pub fn publish_answer(ws: &mut WsClient, id: &str, name: &str, custom: serde_json::Value) -> serde_json::Value {
    ws.send(
        "publishStream",
        serde_json::json!({"mediaSessionId": id, "name": name, "hasVideo": true, "hasAudio": true, "sdp": offer(true), "custom": custom}),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(m) = ws.recv(deadline.saturating_duration_since(Instant::now())) {
            if m["message"] == "notifyStreamStatusEvent" || m["message"] == "setRemoteSDP" {
                return m;
            }
        }
    }
    panic!("no answer to publishStream {name}");
}
