//! Shared harness for the RTMP integration tests.
//!
//! Everything here drives *real* peers: the `rtcbridge` binary built by cargo,
//! ffmpeg / ffprobe / rtmpdump / nginx-rtmp as separate processes, and a small
//! hand-written RTMP client (handshake, chunking, AMF0) that shares no code with
//! the server. Every wait has a deadline and every child process is ended when
//! its guard is dropped, pass or fail.
#![allow(dead_code)]

pub mod browser;
pub mod hookd;
pub mod hostile;
pub mod netns;
pub mod signal;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Video frame rate and audio frames per second of [`Publisher::ffmpeg`].
pub const VIDEO_FPS: f64 = 30.0;
pub const AUDIO_FPS: f64 = 48000.0 / 1024.0;

// ---------------------------------------------------------------------------
// Tools, scratch files, ports, waiting
// ---------------------------------------------------------------------------

/// Absolute path of an external tool; panics (never skips) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} not found: run tools/test-all (it installs ffmpeg, rtmpdump, nginx, \
         libnginx-mod-rtmp)"
    );
}

pub fn require_nginx_rtmp_module() {
    if !Path::new(NGINX_RTMP_MODULE).is_file() {
        panic!("{NGINX_RTMP_MODULE} not found: run tools/test-all (it installs libnginx-mod-rtmp)");
    }
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A directory for this test process' files (logs, framemd5 output, configs).
pub fn scratch_dir() -> PathBuf {
    let dir = SCRATCH
        .get_or_init(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("rtcbridge-it-{}-{}", std::process::id(), nanos))
        })
        .clone();
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A fresh, unique path in the scratch dir.
pub fn scratch_path(prefix: &str, ext: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    scratch_dir().join(format!("{prefix}-{n}.{ext}"))
}

static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();

fn claim_port(p: u16) -> bool {
    HANDED_OUT
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap()
        .insert(p)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = l.local_addr().unwrap().port();
        drop(l);
        if claim_port(p) {
            return p;
        }
    }
    panic!("could not find a free TCP port");
}

/// A base UDP port such that base..base+count are all free on 127.0.0.1.
pub fn free_udp_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let first = UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
        let base = first.local_addr().unwrap().port();
        if base as u32 + count as u32 >= 65535 {
            continue;
        }
        let mut held = vec![first];
        let mut ok = true;
        for i in 1..count {
            match UdpSocket::bind(("127.0.0.1", base + i)) {
                Ok(s) => held.push(s),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        drop(held);
        if ok && (0..count).all(|i| claim_port(base + i)) {
            return base;
        }
    }
    panic!("could not find {count} consecutive free UDP ports");
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Like [`wait_for`] but returns the first `Some` value.
pub fn wait_for_value<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sleeps until `at` (used only for pacing, never as an assertion).
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// Sends a signal by name ("TERM", "INT", "KILL") with the `kill` program.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        // Fall back to the shell builtin (no procps installed).
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{sig} {pid}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Ends a child: `sig` first, SIGKILL after `grace`. Returns its status.
pub fn end_child(child: &mut Child, sig: &str, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    signal(child.id(), sig);
    if let Some(st) = wait_child(child, grace) {
        return Some(st);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A child process that is ended (TERM, then KILL) when dropped.
pub struct ChildGuard {
    pub name: String,
    pub child: Child,
}

impl ChildGuard {
    pub fn new(name: &str, child: Child) -> Self {
        ChildGuard {
            name: name.to_string(),
            child,
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        end_child(&mut self.child, "TERM", Duration::from_secs(2));
    }
}

pub fn read_file_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    let start = v.len().saturating_sub(lines);
    v[start..].join("\n")
}

fn spawn_logged(cmd: &mut Command, what: &str, log: &Path) -> Child {
    let f = File::create(log).expect("create log file");
    cmd.stdin(Stdio::null()).stderr(Stdio::from(f));
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A minimal HTTP/1.1 GET over a plain TcpStream. Returns (status, body).
pub fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    http_request_timeout(port, "GET", path, Duration::from_secs(5))
}

/// GET with a deadline for connecting and for each read.
pub fn http_get_timeout(port: u16, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    http_request_timeout(port, "GET", path, timeout)
}

/// A bodiless request (GET, POST, DELETE) with a deadline for connecting and each read.
pub fn http_request_timeout(port: u16, method: &str, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(2)))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in http headers",
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                content_length = v.parse().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    if let Some(len) = content_length.filter(|_| !chunked) {
        while body.len() < len {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&tmp[..n]);
        }
        body.truncate(len);
    } else {
        loop {
            match s.read(&mut tmp) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(e),
            }
        }
        if chunked {
            body = dechunk(&body);
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let size_txt = String::from_utf8_lossy(&b[..i]);
        let size =
            usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        b = &b[i + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(b) => {
                    let Some(e) = line[b..].find('}').map(|e| b + e) else {
                        continue;
                    };
                    (
                        line[..b].to_string(),
                        parse_labels(&line[b + 1..e]),
                        &line[e + 1..],
                    )
                }
                None => {
                    let mut it = line.splitn(2, char::is_whitespace);
                    let n = it.next().unwrap_or("").to_string();
                    (n, Vec::new(), it.next().unwrap_or(""))
                }
            };
            let Some(v) = rest.split_whitespace().next() else {
                continue;
            };
            let value = match v {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                _ => match v.parse::<f64>() {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// Sum of `name` over every label set (i.e. over all workers and reasons).
    pub fn sum(&self, name: &str) -> f64 {
        self.sum_where(name, &[])
    }

    /// Sum of `name` over the samples whose labels include all of `want`.
    pub fn sum_where(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    pub fn worker(&self, name: &str, worker: usize) -> f64 {
        self.sum_where(name, &[("worker", &worker.to_string())])
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        if !after.starts_with('"') {
            break;
        }
        let mut val = String::new();
        let mut chars = after[1..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = Some(i + 2);
                    break;
                }
                c => val.push(c),
            }
        }
        out.push((key, val));
        match end {
            Some(e) => rest = &after[e..],
            None => break,
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

static LIVE_SERVERS: AtomicUsize = AtomicUsize::new(0);

pub struct Server {
    child: Option<Child>,
    pub rtmp_port: u16,
    pub http_port: u16,
    pub udp_port: u16,
    pub workers: u16,
    pub log_path: PathBuf,
    pub args: Vec<String>,
    stop_checked: bool,
}

impl Server {
    /// Starts `rtcbridge` on free ports with `extra_args` appended. Defaults
    /// (unless given in `extra_args`): `--workers 1 --log info`, always `--no-pin`.
    pub fn start(extra_args: &[&str]) -> Server {
        Self::start_wrapped(&[], extra_args)
    }

    /// As `start`, with the server run through `wrapper` (a command that execs the rest
    /// of its arguments, such as `prlimit --nofile=512:512 --`).
    pub fn start_wrapped(wrapper: &[&str], extra_args: &[&str]) -> Server {
        let bin = env!("CARGO_BIN_EXE_rtcbridge");
        let has = |flag: &str| extra_args.contains(&flag);
        let workers: u16 = extra_args
            .iter()
            .position(|a| *a == "--workers")
            .and_then(|i| extra_args.get(i + 1))
            .and_then(|w| w.parse().ok())
            .unwrap_or(1);
        let rtmp_port = free_port();
        let http_port = free_port();
        let udp_port = free_udp_ports(workers.max(1));
        let mut args: Vec<String> = vec![
            "--http".into(),
            format!("127.0.0.1:{http_port}"),
            "--rtmp".into(),
            format!("127.0.0.1:{rtmp_port}"),
            "--udp-port".into(),
            udp_port.to_string(),
            "--no-pin".into(),
        ];
        if !has("--workers") {
            args.extend(["--workers".into(), "1".into()]);
        }
        if !has("--log") {
            args.extend(["--log".into(), "info".into()]);
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let log_path = scratch_path("rtcbridge", "log");
        let log = File::create(&log_path).expect("create server log");
        let out = log.try_clone().expect("clone log fd");
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        LIVE_SERVERS.fetch_add(1, Ordering::SeqCst);
        let mut server = Server {
            child: Some(child),
            rtmp_port,
            http_port,
            udp_port,
            workers,
            log_path,
            args,
            stop_checked: false,
        };
        server.wait_ready(Duration::from_secs(10));
        server
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let rtmp: SocketAddr = ([127, 0, 0, 1], self.rtmp_port).into();
        let mut last = String::new();
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "rtcbridge exited during startup ({st}); args {:?}; log:\n{}",
                    self.args,
                    tail(&self.log(), 40)
                );
            }
            let http_ok = match http_get(self.http_port, "/healthz") {
                Ok((200, body)) if body.trim() == "ok" => true,
                Ok((code, body)) => {
                    last = format!("/healthz answered {code} {body:?}");
                    false
                }
                Err(e) => {
                    last = format!("/healthz: {e}");
                    false
                }
            };
            if http_ok {
                match TcpStream::connect_timeout(&rtmp, Duration::from_millis(500)) {
                    Ok(_) => return,
                    Err(e) => last = format!("rtmp port: {e}"),
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "rtcbridge not ready after {timeout:?} ({last}); args {:?}; log:\n{}",
                    self.args,
                    tail(&self.log(), 40)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("server already stopped")
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn rtmp_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{}", self.rtmp_port, name)
    }

    pub fn log(&self) -> String {
        read_file_lossy(&self.log_path)
    }

    /// Waits for a log line for which `pred` holds; returns it.
    pub fn wait_log_line(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log();
            if let Some(l) = text.lines().find(|l| pred(l)) {
                return l.to_string();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no server log line {what} within {timeout:?}; log tail:\n{}",
                    tail(&text, 30)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET on the HTTP API; panics with the error when it fails.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http_port, path).unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
    }

    pub fn metrics(&self) -> Metrics {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "GET /metrics answered {code}: {body}");
        Metrics::parse(&body)
    }

    /// The `streams` array of GET /api/streams.
    pub fn streams(&self) -> Vec<serde_json::Value> {
        let (code, body) = self.get("/api/streams");
        assert_eq!(code, 200, "GET /api/streams answered {code}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/api/streams is not JSON ({e}): {body}"));
        v.get("streams")
            .and_then(|s| s.as_array())
            .cloned()
            .unwrap_or_else(|| panic!("/api/streams has no \"streams\" array: {body}"))
    }

    pub fn stream(&self, name: &str) -> Option<serde_json::Value> {
        self.streams()
            .into_iter()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(name))
    }

    /// Video frame count that /api/streams reports for `name` (0 when absent).
    pub fn video_frames(&self, name: &str) -> u64 {
        self.stream(name)
            .and_then(|s| {
                s.get("video")
                    .and_then(|v| v.get("frames"))
                    .and_then(|f| f.as_u64())
            })
            .unwrap_or(0)
    }

    /// Waits until /api/streams shows `name` with video and audio frames.
    pub fn wait_stream_live(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stream(name);
            let frames = |kind: &str| {
                s.as_ref()
                    .and_then(|s| {
                        s.get(kind)
                            .and_then(|v| v.get("frames"))
                            .and_then(|f| f.as_u64())
                    })
                    .unwrap_or(0)
            };
            if frames("video") > 0 && frames("audio") > 0 {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "stream {name} not live (video and audio frames) after {timeout:?}; /api/streams: {}",
                    self.get("/api/streams").1
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// VmRSS of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The server's exit status if it has exited. A test that expects the process to
    /// end (an abort) calls this; the server then counts as stopped.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        LIVE_SERVERS.fetch_sub(1, Ordering::SeqCst);
        self.stop_checked = true;
        Some(st)
    }

    /// SIGTERM, then asserts the contract: exit status 0 within 2 s.
    /// (Also done by `Drop`; call it explicitly to check shutdown with clients connected.)
    pub fn shutdown_checked(&mut self) {
        let (status, took) = self.terminate();
        self.stop_checked = true;
        check_shutdown(status, took, &self.log());
    }

    fn terminate(&mut self) -> (Option<ExitStatus>, Duration) {
        let Some(mut child) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        LIVE_SERVERS.fetch_sub(1, Ordering::SeqCst);
        if let Ok(Some(st)) = child.try_wait() {
            // It died on its own before we asked: that is a failure of its own kind.
            return (Some(st), Duration::MAX);
        }
        let t = Instant::now();
        signal(child.id(), "TERM");
        let st = wait_child(&mut child, Duration::from_secs(3));
        let took = t.elapsed();
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (st, took)
    }
}

fn check_shutdown(status: Option<ExitStatus>, took: Duration, log: &str) {
    match status {
        None => panic!(
            "rtcbridge did not exit within 3 s of SIGTERM (contract: exit 0 within 2 s); log tail:\n{}",
            tail(log, 30)
        ),
        Some(st) if took == Duration::MAX => panic!(
            "rtcbridge had already exited ({st}) before the test stopped it; log tail:\n{}",
            tail(log, 30)
        ),
        Some(st) => {
            assert!(
                took <= Duration::from_secs(2),
                "rtcbridge took {took:?} to exit after SIGTERM (contract: within 2 s); log tail:\n{}",
                tail(log, 30)
            );
            assert!(
                st.success(),
                "rtcbridge exited with {st} after SIGTERM (contract: status 0); log tail:\n{}",
                tail(log, 30)
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let (status, took) = self.terminate();
        let log = self.log();
        if thread::panicking() {
            eprintln!(
                "test failed; rtcbridge log {} (files kept in {}); tail:\n{}",
                self.log_path.display(),
                scratch_dir().display(),
                tail(&log, 40)
            );
            return;
        }
        if !self.stop_checked {
            check_shutdown(status, took, &log);
        }
        if LIVE_SERVERS.load(Ordering::SeqCst) == 0 {
            let _ = fs::remove_dir_all(scratch_dir());
        }
    }
}

/// Write a self-signed certificate and key as PEM files (rcgen, base64: the crate's own deps).
pub fn self_signed_pem(dir: &Path) -> (PathBuf, PathBuf) {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("params")
        .self_signed(&key)
        .expect("self-sign");
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let body: Vec<String> = b64.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", body.join("\n"))
    };
    let c = dir.join("cert.pem");
    let k = dir.join("key.pem");
    std::fs::write(&c, pem("CERTIFICATE", cert.der())).expect("write cert");
    std::fs::write(&k, pem("PRIVATE KEY", &key.serialize_der())).expect("write key");
    (c, k)
}

// ---------------------------------------------------------------------------
// ffmpeg publisher
// ---------------------------------------------------------------------------

pub struct Publisher {
    pub guard: ChildGuard,
    pub url: String,
    pub log_path: PathBuf,
}

impl Publisher {
    /// A live H.264 + AAC publisher: testsrc2 640x360 30 fps, GOP 60 (2 s),
    /// `kbps` video CBR, 48 kHz AAC 128 kb/s, real time (-re).
    pub fn ffmpeg(url: &str, kbps: u32) -> Publisher {
        let ffmpeg = tool("ffmpeg");
        let log_path = scratch_path("publisher", "log");
        let k = format!("{kbps}k");
        let half = format!("{}k", kbps / 2);
        let mut cmd = Command::new(ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-v", "error"])
            .args(["-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args([
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
            ])
            .args(["-map", "0:v", "-map", "1:a"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-pix_fmt",
                "yuv420p",
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
            ])
            .args([
                "-b:v", &k, "-minrate", &k, "-maxrate", &k, "-bufsize", &half,
            ])
            .args(["-x264-params", "nal-hrd=cbr"])
            .args(["-c:a", "aac", "-ar", "48000", "-b:a", "128k"])
            .args(["-flvflags", "no_duration_filesize", "-f", "flv", url])
            .stdout(Stdio::null());
        let child = spawn_logged(&mut cmd, "ffmpeg publisher", &log_path);
        Publisher {
            guard: ChildGuard::new("ffmpeg publisher", child),
            url: url.to_string(),
            log_path,
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Abrupt end (SIGKILL): the server sees the TCP connection drop.
    pub fn kill(&mut self) {
        let _ = self.guard.child.kill();
        let _ = self.guard.child.wait();
    }

    pub fn log(&self) -> String {
        read_file_lossy(&self.log_path)
    }
}

// ---------------------------------------------------------------------------
// framemd5 players
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub dts: i64,
    pub pts: i64,
    pub duration: i64,
    pub size: i64,
}

#[derive(Clone, Debug, Default)]
pub struct StreamLog {
    pub index: u32,
    pub media_type: String,
    /// Time base (num, den).
    pub tb: (i64, i64),
    pub frames: Vec<Frame>,
}

impl StreamLog {
    pub fn seconds(&self, ts: i64) -> f64 {
        ts as f64 * self.tb.0 as f64 / self.tb.1.max(1) as f64
    }
    /// Index of the first frame whose pts does not increase, if any.
    pub fn first_non_monotonic(&self) -> Option<usize> {
        self.frames
            .windows(2)
            .position(|w| w[1].pts <= w[0].pts)
            .map(|i| i + 1)
    }
}

/// Incremental framemd5 parser: header lines give stream types and time bases.
#[derive(Default)]
pub struct FrameMd5 {
    pub streams: BTreeMap<u32, StreamLog>,
}

impl FrameMd5 {
    pub fn parse(text: &str) -> FrameMd5 {
        let mut p = FrameMd5::default();
        for l in text.lines() {
            p.line(l);
        }
        p
    }

    /// Feeds one line; returns (stream index, frame) for frame lines.
    pub fn line(&mut self, l: &str) -> Option<(u32, Frame)> {
        let l = l.trim();
        if let Some(h) = l.strip_prefix('#') {
            let (key, val) = h.split_once(':')?;
            let mut kw = key.split_whitespace();
            let kind = kw.next()?;
            let idx: u32 = kw.next()?.parse().ok()?;
            let val = val.trim();
            let s = self.streams.entry(idx).or_insert_with(|| StreamLog {
                index: idx,
                tb: (1, 1000),
                ..Default::default()
            });
            match kind {
                "media_type" => s.media_type = val.to_string(),
                "tb" => {
                    if let Some((n, d)) = val.split_once('/') {
                        s.tb = (
                            n.trim().parse().unwrap_or(1),
                            d.trim().parse().unwrap_or(1000),
                        );
                    }
                }
                _ => {}
            }
            return None;
        }
        let f: Vec<&str> = l.split(',').map(|x| x.trim()).collect();
        if f.len() < 6 {
            return None;
        }
        let idx: u32 = f[0].parse().ok()?;
        let frame = Frame {
            dts: f[1].parse().ok()?,
            pts: f[2].parse().ok()?,
            duration: f[3].parse().ok()?,
            size: f[4].parse().ok()?,
        };
        let s = self.streams.entry(idx).or_insert_with(|| StreamLog {
            index: idx,
            tb: (1, 1000),
            ..Default::default()
        });
        s.frames.push(frame);
        Some((idx, frame))
    }

    pub fn by_type(&self, media_type: &str) -> Option<&StreamLog> {
        self.streams.values().find(|s| s.media_type == media_type)
    }
}

#[derive(Debug)]
pub struct PlayResult {
    pub label: String,
    pub streams: BTreeMap<u32, StreamLog>,
    /// Non-empty stderr lines of a `-v error` ffmpeg: every one is an error.
    pub errors: Vec<String>,
    pub status: Option<ExitStatus>,
    pub wall: Duration,
}

impl PlayResult {
    pub fn video(&self) -> Option<&StreamLog> {
        self.streams.values().find(|s| s.media_type == "video")
    }
    pub fn audio(&self) -> Option<&StreamLog> {
        self.streams.values().find(|s| s.media_type == "audio")
    }
    pub fn video_count(&self) -> usize {
        self.video().map(|s| s.frames.len()).unwrap_or(0)
    }
    pub fn audio_count(&self) -> usize {
        self.audio().map(|s| s.frames.len()).unwrap_or(0)
    }

    /// Zero decode errors, at least `min_video` / `min_audio` frames, pts
    /// strictly increasing per stream, and (when `check_exit`) exit status 0.
    pub fn assert_healthy(&self, min_video: usize, min_audio: usize, check_exit: bool) {
        let l = &self.label;
        assert!(
            self.errors.is_empty(),
            "{l}: decoder errors on stderr:\n{}",
            self.errors.join("\n")
        );
        if check_exit {
            match self.status {
                Some(st) => assert!(st.success(), "{l}: ffmpeg exited with {st}"),
                None => panic!("{l}: ffmpeg did not exit by itself"),
            }
        }
        assert!(
            self.video_count() >= min_video,
            "{l}: {} video frames decoded, want >= {min_video}",
            self.video_count()
        );
        assert!(
            self.audio_count() >= min_audio,
            "{l}: {} audio frames decoded, want >= {min_audio}",
            self.audio_count()
        );
        for s in self.streams.values() {
            if let Some(i) = s.first_non_monotonic() {
                panic!(
                    "{l}: {} stream {} pts not increasing at frame {i}: {:?} then {:?}",
                    s.media_type,
                    s.index,
                    s.frames[i - 1],
                    s.frames[i]
                );
            }
        }
    }
}

/// Minimum frame counts for a window of `secs` at `ratio` of the nominal rate.
pub fn min_video_frames(secs: f64, ratio: f64) -> usize {
    (VIDEO_FPS * secs * ratio).floor() as usize
}
pub fn min_audio_frames(secs: f64, ratio: f64) -> usize {
    (AUDIO_FPS * secs * ratio).floor() as usize
}

fn stderr_errors(path: &Path) -> Vec<String> {
    read_file_lossy(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A short ffmpeg publish attempt (2 s of test pattern); returns (succeeded, stderr).
pub fn try_publish(url: &str) -> (bool, String) {
    let out = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15", "-t", "2"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", url])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `ffmpeg -v error -i URL -t SECS -map 0 -f framemd5 OUT` in the background.
pub struct FramePlayer {
    pub label: String,
    pub url: String,
    pub secs: f64,
    pub started: Instant,
    guard: ChildGuard,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl FramePlayer {
    pub fn start(label: &str, url: &str, secs: f64) -> FramePlayer {
        let out_path = scratch_path("player", "framemd5");
        let err_path = scratch_path("player", "err");
        let mut cmd = Command::new(tool("ffmpeg"));
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
        ])
        .args([
            "-i",
            url,
            "-t",
            &format!("{secs}"),
            "-map",
            "0",
            "-f",
            "framemd5",
        ])
        .arg(&out_path)
        .stdout(Stdio::null());
        let started = Instant::now();
        let child = spawn_logged(&mut cmd, "ffmpeg player", &err_path);
        FramePlayer {
            label: label.to_string(),
            url: url.to_string(),
            secs,
            started,
            guard: ChildGuard::new(label, child),
            out_path,
            err_path,
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Waits (at most `timeout` from now) for ffmpeg to end its window and parses its output.
    pub fn finish(mut self, timeout: Duration) -> PlayResult {
        let status = wait_child(&mut self.guard.child, timeout);
        if status.is_none() {
            end_child(&mut self.guard.child, "KILL", Duration::from_secs(1));
            let partial = FrameMd5::parse(&read_file_lossy(&self.out_path));
            panic!(
                "{}: ffmpeg playing {} for {} s still running after {timeout:?} more \
                 (stalled stream?); frames so far {:?}; stderr:\n{}",
                self.label,
                self.url,
                self.secs,
                partial
                    .streams
                    .values()
                    .map(|s| (s.media_type.clone(), s.frames.len()))
                    .collect::<Vec<_>>(),
                read_file_lossy(&self.err_path)
            );
        }
        let parsed = FrameMd5::parse(&read_file_lossy(&self.out_path));
        PlayResult {
            label: self.label.clone(),
            streams: parsed.streams,
            errors: stderr_errors(&self.err_path),
            status,
            wall: self.started.elapsed(),
        }
    }
}

/// An ffmpeg player whose framemd5 goes to a pipe, read line by line as frames
/// arrive, so the test can measure its live lag.
pub struct LivePlayer {
    pub label: String,
    pub started: Instant,
    guard: ChildGuard,
    err_path: PathBuf,
    state: Arc<Mutex<LiveState>>,
    reader: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct LiveState {
    parser: FrameMd5,
    first_video: Option<f64>,
    last_video: Option<f64>,
    eof: bool,
}

impl LivePlayer {
    pub fn start(label: &str, url: &str, secs: f64) -> LivePlayer {
        let err_path = scratch_path("liveplayer", "err");
        let mut cmd = Command::new(tool("ffmpeg"));
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-rw_timeout",
            "5000000",
        ])
        .args(["-i", url, "-t", &format!("{secs}"), "-map", "0"])
        .args(["-f", "framemd5", "-flush_packets", "1", "-"])
        .stdout(Stdio::piped());
        let started = Instant::now();
        let mut child = spawn_logged(&mut cmd, "ffmpeg live player", &err_path);
        let stdout = child.stdout.take().expect("player stdout");
        let state = Arc::new(Mutex::new(LiveState::default()));
        let st = state.clone();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let mut s = st.lock().unwrap();
                        if let Some((idx, f)) = s.parser.line(&line) {
                            let sl = &s.parser.streams[&idx];
                            if sl.media_type == "video" {
                                let t = sl.seconds(f.pts);
                                if s.first_video.is_none() {
                                    s.first_video = Some(t);
                                }
                                s.last_video = Some(t);
                            }
                        }
                    }
                }
            }
            st.lock().unwrap().eof = true;
        });
        LivePlayer {
            label: label.to_string(),
            started,
            guard: ChildGuard::new(label, child),
            err_path,
            state,
            reader: Some(reader),
        }
    }

    /// Wall-clock time since start minus media time received (video), in seconds.
    pub fn lag(&self) -> Option<f64> {
        let s = self.state.lock().unwrap();
        let (first, last) = (s.first_video?, s.last_video?);
        Some(self.started.elapsed().as_secs_f64() - (last - first))
    }

    pub fn video_frames(&self) -> usize {
        let s = self.state.lock().unwrap();
        s.parser
            .by_type("video")
            .map(|v| v.frames.len())
            .unwrap_or(0)
    }

    pub fn ended(&self) -> bool {
        self.state.lock().unwrap().eof
    }

    /// Stops the player (if still running) and returns what it decoded.
    pub fn finish(mut self) -> PlayResult {
        let status = end_child(&mut self.guard.child, "INT", Duration::from_secs(3));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let s = std::mem::take(&mut *self.state.lock().unwrap());
        PlayResult {
            label: self.label.clone(),
            streams: s.parser.streams,
            errors: stderr_errors(&self.err_path),
            status,
            wall: self.started.elapsed(),
        }
    }
}

// ---------------------------------------------------------------------------
// nginx-rtmp
// ---------------------------------------------------------------------------

pub struct Nginx {
    guard: ChildGuard,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    /// nginx with the RTMP module on a free port; `applications` goes inside
    /// `rtmp { server { ... } }` (e.g. `application live { live on; }`).
    pub fn start(applications: &str) -> Nginx {
        let nginx = tool("nginx");
        require_nginx_rtmp_module();
        let port = free_port();
        let dir = scratch_path("nginx", "d");
        fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let d = dir.display();
        let conf = format!(
            "load_module {NGINX_RTMP_MODULE};\n\
             daemon off;\nmaster_process off;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    {applications}\n  }}\n}}\n"
        );
        fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"));
        cmd.stdout(Stdio::null());
        let child = spawn_logged(&mut cmd, "nginx", &dir.join("stderr.log"));
        let mut n = Nginx {
            guard: ChildGuard::new("nginx", child),
            port,
            dir,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !n.guard.is_running() {
                panic!(
                    "nginx exited at startup:\n{}\n{}",
                    read_file_lossy(&n.dir.join("stderr.log")),
                    n.error_log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "nginx not listening on {port} after 10 s:\n{}",
                    n.error_log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        n
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{}", self.port, name)
    }

    pub fn error_log(&self) -> String {
        read_file_lossy(&self.dir.join("error.log"))
    }
}

// ---------------------------------------------------------------------------
// AMF0
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub enum Amf {
    Number(f64),
    Bool(bool),
    Str(String),
    Object(Vec<(String, Amf)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf)>),
    StrictArray(Vec<Amf>),
    Date(f64),
    /// A marker this decoder does not handle (decoding stops there).
    Unsupported(u8),
}

impl Amf {
    pub fn str(s: &str) -> Amf {
        Amf::Str(s.to_string())
    }
    pub fn obj(props: &[(&str, Amf)]) -> Amf {
        Amf::Object(
            props
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }
    pub fn get(&self, key: &str) -> Option<&Amf> {
        match self {
            Amf::Object(p) | Amf::EcmaArray(p) => p.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf::Number(n) => Some(*n),
            _ => None,
        }
    }
}

pub fn amf0_encode(values: &[Amf]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        amf0_write(&mut out, v);
    }
    out
}

fn amf0_key(out: &mut Vec<u8>, k: &str) {
    out.extend_from_slice(&(k.len() as u16).to_be_bytes());
    out.extend_from_slice(k.as_bytes());
}

fn amf0_write(out: &mut Vec<u8>, v: &Amf) {
    match v {
        Amf::Number(n) => {
            out.push(0x00);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf::Bool(b) => {
            out.push(0x01);
            out.push(*b as u8);
        }
        Amf::Str(s) if s.len() > 0xFFFF => {
            out.push(0x0C);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        Amf::Str(s) => {
            out.push(0x02);
            amf0_key(out, s);
        }
        Amf::Object(props) => {
            out.push(0x03);
            for (k, v) in props {
                amf0_key(out, k);
                amf0_write(out, v);
            }
            out.extend_from_slice(&[0, 0, 0x09]);
        }
        Amf::Null => out.push(0x05),
        Amf::Undefined => out.push(0x06),
        Amf::EcmaArray(props) => {
            out.push(0x08);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            for (k, v) in props {
                amf0_key(out, k);
                amf0_write(out, v);
            }
            out.extend_from_slice(&[0, 0, 0x09]);
        }
        Amf::StrictArray(items) => {
            out.push(0x0A);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for i in items {
                amf0_write(out, i);
            }
        }
        Amf::Date(ms) => {
            out.push(0x0B);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        Amf::Unsupported(m) => out.push(*m),
    }
}

struct AmfReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> AmfReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn f64(&mut self) -> Option<f64> {
        self.take(8)
            .map(|s| f64::from_be_bytes(s.try_into().unwrap()))
    }
    fn short_str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn props(&mut self) -> Option<Vec<(String, Amf)>> {
        let mut out = Vec::new();
        loop {
            let k = self.short_str()?;
            if k.is_empty() && self.b.get(self.pos) == Some(&0x09) {
                self.pos += 1;
                return Some(out);
            }
            let v = self.value()?;
            if matches!(v, Amf::Unsupported(_)) {
                return None;
            }
            out.push((k, v));
        }
    }
    fn value(&mut self) -> Option<Amf> {
        let m = self.u8()?;
        Some(match m {
            0x00 => Amf::Number(self.f64()?),
            0x01 => Amf::Bool(self.u8()? != 0),
            0x02 => Amf::Str(self.short_str()?),
            0x03 => Amf::Object(self.props()?),
            0x05 => Amf::Null,
            0x06 => Amf::Undefined,
            0x08 => {
                let _count = self.u32()?;
                Amf::EcmaArray(self.props()?)
            }
            0x0A => {
                let n = self.u32()? as usize;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value()?);
                }
                Amf::StrictArray(items)
            }
            0x0B => {
                let ms = self.f64()?;
                self.take(2)?;
                Amf::Date(ms)
            }
            0x0C => {
                let n = self.u32()? as usize;
                Amf::Str(String::from_utf8_lossy(self.take(n)?).into_owned())
            }
            other => Amf::Unsupported(other),
        })
    }
}

/// Decodes AMF0 values until the end or the first value it cannot read.
pub fn amf0_decode_all(b: &[u8]) -> Vec<Amf> {
    let mut r = AmfReader { b, pos: 0 };
    let mut out = Vec::new();
    while r.pos < b.len() {
        match r.value() {
            Some(Amf::Unsupported(m)) => {
                out.push(Amf::Unsupported(m));
                break;
            }
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

// ---------------------------------------------------------------------------
// RTMP chunking
// ---------------------------------------------------------------------------

pub const MSG_SET_CHUNK_SIZE: u8 = 1;
pub const MSG_ACK: u8 = 3;
pub const MSG_USER_CONTROL: u8 = 4;
pub const MSG_WINDOW_ACK: u8 = 5;
pub const MSG_SET_PEER_BW: u8 = 6;
pub const MSG_AUDIO: u8 = 8;
pub const MSG_VIDEO: u8 = 9;
pub const MSG_DATA_AMF3: u8 = 15;
pub const MSG_COMMAND_AMF3: u8 = 17;
pub const MSG_DATA_AMF0: u8 = 18;
pub const MSG_COMMAND_AMF0: u8 = 20;

fn basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.push((fmt << 6) | csid as u8),
        64..=319 => {
            out.push(fmt << 6);
            out.push((csid - 64) as u8);
        }
        _ => {
            let v = csid - 64;
            out.push((fmt << 6) | 1);
            out.push((v & 0xff) as u8);
            out.push((v >> 8) as u8);
        }
    }
}

/// A type-0 chunk header announcing a message of `len` bytes (len may lie).
pub fn chunk_header_fmt0(
    csid: u32,
    timestamp: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    basic_header(&mut out, 0, csid);
    let ts_field = timestamp.min(0xFF_FFFF);
    out.extend_from_slice(&ts_field.to_be_bytes()[1..]);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if timestamp >= 0xFF_FFFF {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    out
}

/// One complete message split into chunks of `chunk_size`.
pub fn chunk_message(
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) -> Vec<u8> {
    let mut out = chunk_header_fmt0(csid, timestamp, payload.len() as u32, type_id, stream_id);
    let mut chunks = payload.chunks(chunk_size.max(1));
    if let Some(first) = chunks.next() {
        out.extend_from_slice(first);
    }
    for c in chunks {
        basic_header(&mut out, 3, csid);
        if timestamp >= 0xFF_FFFF {
            out.extend_from_slice(&timestamp.to_be_bytes());
        }
        out.extend_from_slice(c);
    }
    out
}

#[derive(Clone, Debug)]
pub struct Message {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Vec<u8>,
}

#[derive(Default, Clone)]
struct ChunkState {
    timestamp: u32,
    ts_field: u32,
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
    buf: Vec<u8>,
}

/// Reassembles chunks into messages (RTMP spec 5.3), independent of the server.
pub struct ChunkReader {
    pub chunk_size: usize,
    pub bytes_read: u64,
    states: HashMap<u32, ChunkState>,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader {
            chunk_size: 128,
            bytes_read: 0,
            states: HashMap::new(),
        }
    }
}

impl ChunkReader {
    fn exact<R: Read>(&mut self, r: &mut R, n: usize) -> io::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        r.read_exact(&mut v)?;
        self.bytes_read += n as u64;
        Ok(v)
    }
    fn be(b: &[u8]) -> u32 {
        b.iter().fold(0u32, |a, x| (a << 8) | *x as u32)
    }

    pub fn read_message<R: Read>(&mut self, r: &mut R) -> io::Result<Message> {
        loop {
            let b0 = self.exact(r, 1)?[0];
            let fmt = b0 >> 6;
            let csid = match b0 & 0x3f {
                0 => 64 + self.exact(r, 1)?[0] as u32,
                1 => {
                    let b = self.exact(r, 2)?;
                    64 + b[0] as u32 + 256 * b[1] as u32
                }
                c => c as u32,
            };
            let mut st = self.states.remove(&csid).unwrap_or_default();
            let new_message = st.buf.is_empty();
            match fmt {
                0 => {
                    let h = self.exact(r, 11)?;
                    st.ts_field = Self::be(&h[0..3]);
                    st.length = Self::be(&h[3..6]);
                    st.type_id = h[6];
                    st.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                    st.extended = st.ts_field == 0xFF_FFFF;
                    if st.extended {
                        st.ts_field = Self::be(&self.exact(r, 4)?);
                    }
                    st.timestamp = st.ts_field;
                    st.buf.clear();
                }
                1 | 2 => {
                    let h = self.exact(r, if fmt == 1 { 7 } else { 3 })?;
                    st.ts_field = Self::be(&h[0..3]);
                    if fmt == 1 {
                        st.length = Self::be(&h[3..6]);
                        st.type_id = h[6];
                    }
                    st.extended = st.ts_field == 0xFF_FFFF;
                    if st.extended {
                        st.ts_field = Self::be(&self.exact(r, 4)?);
                    }
                    st.timestamp = st.timestamp.wrapping_add(st.ts_field);
                    st.buf.clear();
                }
                _ => {
                    if st.extended {
                        self.exact(r, 4)?;
                    }
                    if new_message {
                        st.timestamp = st.timestamp.wrapping_add(st.ts_field);
                    }
                }
            }
            let want =
                (st.length as usize - st.buf.len().min(st.length as usize)).min(self.chunk_size);
            let data = self.exact(r, want)?;
            st.buf.extend_from_slice(&data);
            if st.buf.len() >= st.length as usize {
                let msg = Message {
                    csid,
                    timestamp: st.timestamp,
                    type_id: st.type_id,
                    stream_id: st.stream_id,
                    payload: std::mem::take(&mut st.buf),
                };
                self.states.insert(csid, st);
                if msg.type_id == MSG_SET_CHUNK_SIZE && msg.payload.len() >= 4 {
                    let n = u32::from_be_bytes([
                        msg.payload[0],
                        msg.payload[1],
                        msg.payload[2],
                        msg.payload[3],
                    ]) & 0x7fff_ffff;
                    if n > 0 {
                        self.chunk_size = n as usize;
                    }
                }
                return Ok(msg);
            }
            self.states.insert(csid, st);
        }
    }
}

// ---------------------------------------------------------------------------
// Raw RTMP connections
// ---------------------------------------------------------------------------

/// A plain TCP connection for hand-built bytes.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).ok();
        RawConn { stream }
    }

    /// "127.0.0.1:PORT" of our end: the peer address in the server's logs.
    pub fn local_addr(&self) -> String {
        self.stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Plain (unsigned) handshake: C0=3, C1 with a zero version field; reads
    /// S0 S1 S2 and echoes S1 as C2. Deadline 5 s.
    pub fn handshake(&mut self) -> io::Result<()> {
        self.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut c0c1 = Vec::with_capacity(1537);
        c0c1.push(3u8);
        c0c1.extend_from_slice(&0u32.to_be_bytes()); // time
        c0c1.extend_from_slice(&[0, 0, 0, 0]); // zero: plain handshake
        let mut seed: u32 = 0x2545_F491 ^ std::process::id();
        for _ in 0..1528 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            c0c1.push(seed as u8);
        }
        self.stream.write_all(&c0c1)?;
        let mut s0 = [0u8; 1];
        self.stream.read_exact(&mut s0)?;
        if s0[0] != 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("S0 version {}", s0[0]),
            ));
        }
        let mut s1 = vec![0u8; 1536];
        self.stream.read_exact(&mut s1)?;
        let mut s2 = vec![0u8; 1536];
        self.stream.read_exact(&mut s2)?;
        self.stream.write_all(&s1)?; // C2 echoes S1
        self.stream.set_read_timeout(None)?;
        Ok(())
    }

    /// Writes bytes; errors are returned (the server may close mid-write).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads (discarding) until the server closes the connection: Ok(how)
    /// on EOF / reset, Err if it is still open after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        let mut got = 0usize;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "connection still open after {timeout:?} ({got} bytes received)"
                ));
            }
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .ok();
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(format!("EOF after {got} bytes")),
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Ok(format!("{e} after {got} bytes")),
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    /// An AMF command (type 20, or 17 with its leading 0x00 skipped).
    Command {
        name: String,
        txn: f64,
        args: Vec<Amf>,
        type_id: u8,
    },
    /// onStatus: the info object's code.
    Status {
        code: String,
        info: Amf,
    },
    Media {
        type_id: u8,
        timestamp: u32,
        len: usize,
        head: [u8; 2],
    },
    Data {
        name: String,
    },
    Control {
        type_id: u8,
        payload: Vec<u8>,
    },
    Closed(String),
}

#[derive(Clone, Debug)]
pub struct Rec {
    pub at: Instant,
    pub event: Event,
}

impl Rec {
    pub fn status(&self) -> Option<&str> {
        match &self.event {
            Event::Status { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn is_media(&self, type_id: u8) -> bool {
        matches!(&self.event, Event::Media { type_id: t, .. } if *t == type_id)
    }
    /// For a video message: (is keyframe, is AVC sequence header).
    pub fn video_kind(&self) -> Option<(bool, bool)> {
        match &self.event {
            Event::Media {
                type_id: MSG_VIDEO,
                head,
                len,
                ..
            } if *len >= 2 => {
                let key = head[0] >> 4 == 1;
                let avc = head[0] & 0x0f == 7;
                Some((key, avc && head[1] == 0))
            }
            _ => None,
        }
    }
}

type Events = Arc<(Mutex<Vec<Rec>>, Condvar)>;

/// An evented RTMP client: a reader thread records every message it receives.
pub struct RtmpClient {
    writer: Arc<Mutex<TcpStream>>,
    events: Events,
    reader: Option<JoinHandle<()>>,
    shutdown_handle: TcpStream,
    next_txn: f64,
    pub out_chunk_size: usize,
    pub local: String,
    pub port: u16,
}

impl RtmpClient {
    /// TCP connect + plain handshake, then starts the reader thread.
    pub fn connect(port: u16) -> RtmpClient {
        let mut raw = RawConn::connect(port);
        raw.handshake()
            .unwrap_or_else(|e| panic!("RTMP handshake with 127.0.0.1:{port} failed: {e}"));
        Self::from_raw(raw, port)
    }

    pub fn from_raw(raw: RawConn, port: u16) -> RtmpClient {
        let local = raw.local_addr();
        let stream = raw.stream;
        let read_half = stream.try_clone().expect("clone socket");
        let shutdown_handle = stream.try_clone().expect("clone socket");
        let writer = Arc::new(Mutex::new(stream));
        let events: Events = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let (w, ev) = (writer.clone(), events.clone());
        let reader = thread::spawn(move || reader_loop(read_half, w, ev));
        RtmpClient {
            writer,
            events,
            reader: Some(reader),
            shutdown_handle,
            next_txn: 1.0,
            out_chunk_size: 128,
            local,
            port,
        }
    }

    pub fn send_message(
        &self,
        csid: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let bytes = chunk_message(csid, 0, type_id, stream_id, payload, self.out_chunk_size);
        self.writer.lock().unwrap().write_all(&bytes)
    }

    /// Sends an AMF0 command as type 20, or as type 17 (0x00 then AMF0) when `amf3_type`.
    pub fn send_command(&self, stream_id: u32, amf3_type: bool, values: &[Amf]) {
        let mut payload = Vec::new();
        if amf3_type {
            payload.push(0x00);
        }
        payload.extend(amf0_encode(values));
        let (csid, t) = if stream_id == 0 {
            (3, MSG_COMMAND_AMF0)
        } else {
            (8, MSG_COMMAND_AMF0)
        };
        let t = if amf3_type { MSG_COMMAND_AMF3 } else { t };
        self.send_message(csid, t, stream_id, &payload)
            .unwrap_or_else(|e| panic!("sending {:?} failed: {e}", values.first()));
    }

    fn txn(&mut self) -> f64 {
        self.next_txn += 1.0;
        self.next_txn
    }

    /// The connect command object a Flash-like client sends, plus `extra` properties.
    pub fn connect_object(&self, app: &str, extra: &[(&str, Amf)]) -> Amf {
        let mut props: Vec<(&str, Amf)> = vec![
            ("app", Amf::str(app)),
            ("flashVer", Amf::str("LNX 9,0,124,2")),
            (
                "tcUrl",
                Amf::Str(format!("rtmp://127.0.0.1:{}/{}", self.port, app)),
            ),
            ("fpad", Amf::Bool(false)),
            ("capabilities", Amf::Number(15.0)),
            ("audioCodecs", Amf::Number(4071.0)),
            ("videoCodecs", Amf::Number(252.0)),
            ("videoFunction", Amf::Number(1.0)),
        ];
        props.extend(extra.iter().cloned());
        Amf::obj(&props)
    }

    /// connect (txn 1) and wait for its `_result`; returns the `_result` args.
    pub fn connect_app(&mut self, app: &str) -> Vec<Amf> {
        let obj = self.connect_object(app, &[]);
        self.send_command(0, false, &[Amf::str("connect"), Amf::Number(1.0), obj]);
        self.wait_result(1.0, Duration::from_secs(5), "connect")
    }

    /// Waits for `_result` (or fails on `_error`) with transaction id `txn`.
    pub fn wait_result(&self, txn: f64, timeout: Duration, what: &str) -> Vec<Amf> {
        let (_, rec) = self.wait_event(0, timeout, |e| {
            matches!(&e.event, Event::Command { name, txn: t, .. } if (name == "_result" || name == "_error") && *t == txn)
        })
        .unwrap_or_else(|| panic!("no _result for {what} (txn {txn}) within {timeout:?}; events: {}", self.describe()));
        match rec.event {
            Event::Command { name, args, .. } if name == "_result" => args,
            other => panic!("{what} answered with {other:?}"),
        }
    }

    /// createStream; returns the stream id from its `_result`.
    pub fn create_stream(&mut self) -> u32 {
        let txn = self.txn();
        self.send_command(
            0,
            false,
            &[Amf::str("createStream"), Amf::Number(txn), Amf::Null],
        );
        let args = self.wait_result(txn, Duration::from_secs(5), "createStream");
        let id = args
            .iter()
            .filter_map(Amf::as_f64)
            .next()
            .unwrap_or_else(|| panic!("createStream _result without a stream id: {args:?}"));
        id as u32
    }

    pub fn play(&mut self, stream_id: u32, name: &str) {
        // Set Buffer Length (user control event 3) as Flash and ffmpeg send it.
        let mut uc = vec![0u8, 3];
        uc.extend_from_slice(&stream_id.to_be_bytes());
        uc.extend_from_slice(&3000u32.to_be_bytes());
        let _ = self.send_message(2, MSG_USER_CONTROL, 0, &uc);
        self.send_command(
            stream_id,
            false,
            &[
                Amf::str("play"),
                Amf::Number(0.0),
                Amf::Null,
                Amf::str(name),
                Amf::Number(-2000.0),
            ],
        );
    }

    pub fn publish(&mut self, stream_id: u32, name: &str) {
        self.send_command(
            stream_id,
            false,
            &[
                Amf::str("publish"),
                Amf::Number(0.0),
                Amf::Null,
                Amf::str(name),
                Amf::str("live"),
            ],
        );
    }

    /// connect + createStream + play; returns the instant play was sent.
    pub fn start_play(&mut self, name: &str) -> Instant {
        self.connect_app("live");
        let sid = self.create_stream();
        let t = Instant::now();
        self.play(sid, name);
        t
    }

    pub fn len(&self) -> usize {
        self.events.0.lock().unwrap().len()
    }

    pub fn events(&self) -> Vec<Rec> {
        self.events.0.lock().unwrap().clone()
    }

    /// First event at index >= `from` matching `pred`, waiting at most `timeout`.
    pub fn wait_event(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Rec) -> bool,
    ) -> Option<(usize, Rec)> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.events;
        let mut evs = lock.lock().unwrap();
        let mut checked = from;
        loop {
            for (i, e) in evs.iter().enumerate().skip(checked) {
                if pred(e) {
                    return Some((i, e.clone()));
                }
            }
            checked = checked.max(evs.len());
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            evs = cv.wait_timeout(evs, deadline - now).unwrap().0;
        }
    }

    /// Waits for onStatus `code` at index >= `from`; panics listing what came instead.
    pub fn wait_status(&self, from: usize, code: &str, timeout: Duration) -> (usize, Rec) {
        self.wait_event(from, timeout, |e| e.status() == Some(code))
            .unwrap_or_else(|| {
                panic!(
                    "no onStatus {code} within {timeout:?}; received: {}",
                    self.describe()
                )
            })
    }

    /// onStatus codes received so far, in order, with their index.
    pub fn statuses(&self) -> Vec<(usize, String)> {
        self.events()
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.status().map(|c| (i, c.to_string())))
            .collect()
    }

    pub fn closed(&self) -> bool {
        self.events()
            .iter()
            .any(|e| matches!(e.event, Event::Closed(_)))
    }

    /// A compact summary of received events (media collapsed into counts).
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        let mut media = (0usize, 0usize);
        let flush = |out: &mut Vec<String>, media: &mut (usize, usize)| {
            if media.0 + media.1 > 0 {
                out.push(format!("[{} video, {} audio]", media.0, media.1));
                *media = (0, 0);
            }
        };
        for e in self.events() {
            match &e.event {
                Event::Media {
                    type_id: MSG_VIDEO, ..
                } => media.0 += 1,
                Event::Media { .. } => media.1 += 1,
                Event::Status { code, .. } => {
                    flush(&mut out, &mut media);
                    out.push(format!("onStatus {code}"));
                }
                Event::Command {
                    name, txn, args, ..
                } => {
                    flush(&mut out, &mut media);
                    out.push(format!("{name}({txn}) {args:?}"));
                }
                Event::Data { name } => {
                    flush(&mut out, &mut media);
                    out.push(format!("data {name}"));
                }
                Event::Control { type_id, payload } => {
                    flush(&mut out, &mut media);
                    out.push(format!("control type {type_id} {payload:02x?}"));
                }
                Event::Closed(why) => {
                    flush(&mut out, &mut media);
                    out.push(format!("closed: {why}"));
                }
            }
        }
        flush(&mut out, &mut media);
        out.join("; ")
    }
}

impl Drop for RtmpClient {
    fn drop(&mut self) {
        let _ = self.shutdown_handle.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn reader_loop(stream: TcpStream, writer: Arc<Mutex<TcpStream>>, events: Events) {
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut cr = ChunkReader::default();
    let mut window: u64 = 0;
    let mut acked: u64 = 0;
    let push = |ev: Event| {
        let (lock, cv) = &*events;
        lock.lock().unwrap().push(Rec {
            at: Instant::now(),
            event: ev,
        });
        cv.notify_all();
    };
    loop {
        let msg = match cr.read_message(&mut r) {
            Ok(m) => m,
            Err(e) => {
                push(Event::Closed(e.to_string()));
                return;
            }
        };
        match msg.type_id {
            MSG_AUDIO | MSG_VIDEO => {
                let head = [
                    msg.payload.first().copied().unwrap_or(0),
                    msg.payload.get(1).copied().unwrap_or(0),
                ];
                push(Event::Media {
                    type_id: msg.type_id,
                    timestamp: msg.timestamp,
                    len: msg.payload.len(),
                    head,
                });
            }
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => {
                let body = if msg.type_id == MSG_COMMAND_AMF3 && msg.payload.first() == Some(&0) {
                    &msg.payload[1..]
                } else {
                    &msg.payload[..]
                };
                let vals = amf0_decode_all(body);
                let name = vals.first().and_then(Amf::as_str).unwrap_or("").to_string();
                let txn = vals.get(1).and_then(Amf::as_f64).unwrap_or(-1.0);
                let args: Vec<Amf> = vals.iter().skip(2).cloned().collect();
                if name == "onStatus" {
                    let info = args
                        .iter()
                        .find(|a| a.get("code").is_some())
                        .cloned()
                        .unwrap_or(Amf::Null);
                    let code = info
                        .get("code")
                        .and_then(Amf::as_str)
                        .unwrap_or("")
                        .to_string();
                    push(Event::Status { code, info });
                } else {
                    push(Event::Command {
                        name,
                        txn,
                        args,
                        type_id: msg.type_id,
                    });
                }
            }
            MSG_DATA_AMF0 | MSG_DATA_AMF3 => {
                let body = if msg.type_id == MSG_DATA_AMF3 && msg.payload.first() == Some(&0) {
                    &msg.payload[1..]
                } else {
                    &msg.payload[..]
                };
                let name = amf0_decode_all(body)
                    .first()
                    .and_then(Amf::as_str)
                    .unwrap_or("")
                    .to_string();
                push(Event::Data { name });
            }
            MSG_WINDOW_ACK => {
                if msg.payload.len() >= 4 {
                    window = u32::from_be_bytes([
                        msg.payload[0],
                        msg.payload[1],
                        msg.payload[2],
                        msg.payload[3],
                    ]) as u64;
                }
                push(Event::Control {
                    type_id: msg.type_id,
                    payload: msg.payload,
                });
            }
            MSG_USER_CONTROL => {
                // Ping request (event 6) -> ping response (event 7) with the same time.
                if msg.payload.len() >= 6 && msg.payload[0] == 0 && msg.payload[1] == 6 {
                    let mut resp = vec![0u8, 7];
                    resp.extend_from_slice(&msg.payload[2..6]);
                    let bytes = chunk_message(2, 0, MSG_USER_CONTROL, 0, &resp, 128);
                    let _ = writer.lock().unwrap().write_all(&bytes);
                }
                push(Event::Control {
                    type_id: msg.type_id,
                    payload: msg.payload,
                });
            }
            _ => push(Event::Control {
                type_id: msg.type_id,
                payload: msg.payload,
            }),
        }
        if window > 0 && cr.bytes_read - acked >= window {
            acked = cr.bytes_read;
            let seq = (cr.bytes_read & 0xffff_ffff) as u32;
            let bytes = chunk_message(2, 0, MSG_ACK, 0, &seq.to_be_bytes(), 128);
            let _ = writer.lock().unwrap().write_all(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------
// rtmpdump
// ---------------------------------------------------------------------------

/// rtmpdump `args` (URL, options) writing FLV to stdout, piped to the test.
pub fn rtmpdump_to_pipe(args: &[&str]) -> (ChildGuard, ChildStdout, PathBuf) {
    let err = scratch_path("rtmpdump", "err");
    let mut cmd = Command::new(tool("rtmpdump"));
    cmd.args(args).args(["-o", "-"]).stdout(Stdio::piped());
    let mut child = spawn_logged(&mut cmd, "rtmpdump", &err);
    let out = child.stdout.take().expect("rtmpdump stdout");
    (ChildGuard::new("rtmpdump", child), out, err)
}

/// Reads `r` at `bytes_per_sec` until `stop` is set or EOF; returns the byte count.
pub fn slow_reader(
    mut r: impl Read + Send + 'static,
    bytes_per_sec: f64,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    thread::spawn(move || {
        let t0 = Instant::now();
        let mut total: u64 = 0;
        let mut buf = vec![0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let allowed = bytes_per_sec * t0.elapsed().as_secs_f64();
            if (total as f64) < allowed {
                let n = ((allowed - total as f64) as usize).clamp(1, buf.len());
                match r.read(&mut buf[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => total += k as u64,
                }
            } else {
                thread::sleep(Duration::from_millis(20));
            }
        }
        total
    })
}
