//! Drive headless Chromium (tests/js/publish.mjs) against the server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{tool, Server};

pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("js")
}

/// One status line from publish.mjs.
#[derive(Debug)]
pub struct Ev {
    pub t: u64,
    pub el: String,
    pub text: String,
}

/// Run the browser driver; returns status changes (element, text, ms) and the raw output.
pub fn run_browser(server: &Server, page: &str, name: &str, seconds: u32, during: impl FnMut(&[Ev])) -> (Vec<Ev>, String) {
    let http = format!("http://127.0.0.1:{}", server.http_port);
    let ws = format!("ws://127.0.0.1:{}/", server.http_port);
    run_browser_at(&http, &ws, &[], page, name, seconds, during)
}

pub fn run_browser_at(
    http: &str,
    ws: &str,
    extra: &[&str],
    page: &str,
    name: &str,
    seconds: u32,
    mut during: impl FnMut(&[Ev]),
) -> (Vec<Ev>, String) {
    let node = tool("node");
    assert!(
        js_dir().join("node_modules").join("playwright-core").is_dir(),
        "tests/js/node_modules missing: run tools/test-all (npm install in tests/js)"
    );
    assert!(PathBuf::from("/usr/bin/chromium").is_file(), "chromium not found: run tools/test-all");
    let mut child = Command::new(node)
        .current_dir(js_dir())
        .args([
            "publish.mjs",
            "--page",
            page,
            "--http",
            http,
            "--ws",
            ws,
            "--name",
            name,
            "--seconds",
            &seconds.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node publish.mjs");
    let out = child.stdout.take().expect("stdout");
    let mut evs = Vec::new();
    let mut raw = String::new();
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 60);
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        raw.push_str(&line);
        raw.push('\n');
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let (Some(el), Some(text)) = (v.get("el").and_then(|x| x.as_str()), v.get("text").and_then(|x| x.as_str())) {
                evs.push(Ev { t: v.get("t").and_then(|x| x.as_u64()).unwrap_or(0), el: el.to_owned(), text: text.to_owned() });
                during(&evs);
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("browser driver ran past its deadline:\n{raw}");
        }
    }
    let _ = child.wait();
    (evs, raw)
}

pub fn status_seq(evs: &[Ev], el: &str) -> Vec<String> {
    evs.iter().filter(|e| e.el == el).map(|e| e.text.clone()).collect()
}

pub fn first_at(evs: &[Ev], el: &str, text: &str) -> Option<u64> {
    evs.iter().find(|e| e.el == el && e.text == text).map(|e| e.t)
}

