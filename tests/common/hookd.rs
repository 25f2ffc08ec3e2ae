//! A tiny auth-hook backend for the tests: answers each POST as `decide(path, body)`
//! says and keeps every request it saw. Written for the tests, independently of the
//! server's hook client.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the backend does with one request.
pub enum Answer {
    /// Answer with this status, echoing the body.
    Status(u16),
    /// Accept the request and never answer (the socket stays open for a minute).
    Hang,
}

pub struct Backend {
    pub url: String,
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Backend {
    pub fn start(decide: impl Fn(&str, &serde_json::Value) -> Answer + Send + Sync + 'static) -> Backend {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let (s2, decide) = (seen.clone(), Arc::new(decide));
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (seen, decide) = (s2.clone(), decide.clone());
                std::thread::spawn(move || serve(conn, &seen, &*decide));
            }
        });
        Backend { url, seen }
    }

    /// (path, JSON body) of every request so far.
    pub fn seen(&self) -> Vec<(String, serde_json::Value)> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut s: TcpStream, seen: &Mutex<Vec<(String, serde_json::Value)>>, decide: &(dyn Fn(&str, &serde_json::Value) -> Answer + Send + Sync)) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    let body_text = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    let body: serde_json::Value = serde_json::from_str(&body_text).unwrap_or(serde_json::Value::Null);
    seen.lock().unwrap().push((path.clone(), body.clone()));
    match decide(&path, &body) {
        Answer::Hang => std::thread::sleep(Duration::from_secs(60)),
        Answer::Status(code) => {
            let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body_text}", body_text.len());
        }
    }
}
