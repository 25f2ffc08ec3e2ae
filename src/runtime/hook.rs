//! The HTTP auth hook (`--auth-hook URL`, `--auth-hook-wcs URL`): before a connect, a
//! publish or a play is accepted, a backend is asked over plain HTTP/1.1.
//!
//! The workers never wait for it. A worker hands a `HookQuery` to `Hook::submit` (a
//! bounded queue, `MAX_PENDING` requests in flight in the whole process; over it the
//! request is denied at once), keeps the session pending, and gets the `HookVerdict` back
//! through its own channel, its `mio::Waker` rung by the helper thread that made the
//! request. `HOOK_THREADS` helper threads do the blocking I/O, each request bounded by
//! `--auth-hook-timeout` from the moment it was queued (the worker also arms its own
//! deadline, so a saturated pool cannot hold a session longer).
//!
//! Two body shapes:
//! - plain: `POST URL` with `{action, protocol, name, app, ip, query, token, custom}`;
//!   any 2xx allows.
//! - WCS (Flashphoner Web Call Server's REST hooks): `POST URL/connect` with the
//!   connection object as sent, `URL/publishStream` and `URL/playStream` with the stream
//!   object (`name`, `mediaSessionId`, `custom`); 200 allows (the body echo is not
//!   checked), anything else denies.
//!
//! Answers (an HTTP status) are cached for `CACHE_TTL` per identical request; timeouts
//! and connection errors are not cached. Not implemented: https, redirects, the WCS
//! `Authorization` HMAC of the body, and using a body the backend changed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value as Json};

use crate::proto::rtmp::amf::Value as Amf;

/// Helper threads doing the HTTP requests.
const HOOK_THREADS: usize = 4;
/// Hook requests queued or in flight in the whole process; more are denied at once.
pub const MAX_PENDING: usize = 256;
/// How long an answer is reused for an identical request.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached answers kept at most (expired ones are purged first, then all).
const CACHE_MAX: usize = 4096;
/// The backend's status line and headers are read up to this size.
const MAX_RESPONSE_HEAD: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    Connect,
    Publish,
    Play,
}

impl HookAction {
    pub fn as_str(self) -> &'static str {
        match self {
            HookAction::Connect => "connect",
            HookAction::Publish => "publish",
            HookAction::Play => "play",
        }
    }
    fn wcs_path(self) -> &'static str {
        match self {
            HookAction::Connect => "/connect",
            HookAction::Publish => "/publishStream",
            HookAction::Play => "/playStream",
        }
    }
}

/// What the backend is asked about.
#[derive(Debug, Clone)]
pub struct HookQuery {
    pub action: HookAction,
    /// rtmp, rtmps, webrtc (Flashphoner signaling) or whip.
    pub protocol: &'static str,
    pub name: String,
    pub app: String,
    pub ip: IpAddr,
    pub query: String,
    pub token: Option<String>,
    /// Flashphoner's `custom`, or Flash's connect object as sent; `null` when none.
    pub custom: Json,
    /// For WCS: the connection object (connect) or stream object (publish/play) as the
    /// client sent it; built from the fields above when the client sent none.
    pub object: Option<Json>,
}

/// The backend's answer: `Ok` allows; `Err` carries the reason for the log.
#[derive(Debug)]
pub struct HookVerdict {
    pub ticket: u64,
    pub result: Result<(), String>,
}

struct Job {
    worker: usize,
    ticket: u64,
    path: String,
    body: String,
    deadline: Instant,
}

/// The endpoint: `http://HOST[:PORT][/PATH]`.
#[derive(Debug, Clone)]
struct HookUrl {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(flag: &str, url: &str) -> io::Result<HookUrl> {
    let bad = |why: &str| io::Error::other(format!("{flag} {url}: {why}"));
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok(HookUrl { host: host.to_owned(), port, path: path.trim_end_matches('/').to_owned() })
}

/// A started hook and each worker's verdict receiver.
pub type HookStarted = (Arc<Hook>, Vec<Receiver<HookVerdict>>);

/// A cached answer: when it was given, and allowed or the denial.
type Cached = (Instant, Result<(), String>);

/// The runtime's end of the hook: the queue in and the in-flight count.
pub struct Hook {
    jobs: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
    wcs: bool,
    path: String,
    pub timeout: Duration,
}

impl Hook {
    /// Start the helper threads when a hook is configured; returns the hook and one
    /// verdict receiver per worker.
    pub fn start(cfg: &crate::config::Config, wakers: &Arc<Vec<Arc<mio::Waker>>>) -> io::Result<Option<HookStarted>> {
        let (url, wcs) = match (&cfg.auth_hook, &cfg.auth_hook_wcs) {
            (Some(u), _) => (parse_url("--auth-hook", u)?, false),
            (None, Some(u)) => (parse_url("--auth-hook-wcs", u)?, true),
            (None, None) => return Ok(None),
        };
        if !(cfg.auth_hook_timeout > 0.0 && cfg.auth_hook_timeout <= 60.0) {
            return Err(io::Error::other("--auth-hook-timeout: between 0 and 60 seconds"));
        }
        let timeout = Duration::from_secs_f64(cfg.auth_hook_timeout);
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_PENDING);
        let queue = Arc::new(Mutex::new(queue));
        let mut senders = Vec::with_capacity(wakers.len());
        let mut receivers = Vec::with_capacity(wakers.len());
        for _ in 0..wakers.len() {
            let (tx, rx) = mpsc::channel();
            senders.push(tx);
            receivers.push(rx);
        }
        let pending = Arc::new(AtomicUsize::new(0));
        let helper = Arc::new(Helper {
            url: url.clone(),
            timeout,
            senders: Mutex::new(senders),
            wakers: Arc::clone(wakers),
            cache: Mutex::new(HashMap::new()),
            pending: Arc::clone(&pending),
        });
        for i in 0..HOOK_THREADS {
            let (q, h) = (Arc::clone(&queue), Arc::clone(&helper));
            std::thread::Builder::new().name(format!("auth-hook-{i}")).spawn(move || h.run(&q))?;
        }
        let hook = Hook { jobs, pending, wcs, path: url.path, timeout };
        Ok(Some((Arc::new(hook), receivers)))
    }

    /// Queue `q` for worker `worker`; its verdict comes back as `ticket`. `Err` (with the
    /// reason) when too many requests are pending.
    pub fn submit(&self, worker: usize, ticket: u64, q: &HookQuery, now: Instant) -> Result<(), String> {
        let busy = || format!("too many pending auth-hook requests (over {MAX_PENDING})");
        if self.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(busy());
        }
        let (path, body) = if self.wcs {
            (format!("{}{}", self.path, q.action.wcs_path()), wcs_body(q).to_string())
        } else {
            (if self.path.is_empty() { "/".to_owned() } else { self.path.clone() }, plain_body(q).to_string())
        };
        let job = Job { worker, ticket, path, body, deadline: now + self.timeout };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(busy())
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err("auth hook stopped".into())
            }
        }
    }

    /// The reason given when the worker's own deadline passes first.
    pub fn timeout_reason(&self) -> String {
        timed_out(self.timeout)
    }
}

fn timed_out(t: Duration) -> String {
    format!("hook timed out after {} s", secs(t))
}

fn secs(t: Duration) -> String {
    let s = t.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s:.1}")
    }
}

fn plain_body(q: &HookQuery) -> Json {
    json!({
        "action": q.action.as_str(),
        "protocol": q.protocol,
        "name": q.name,
        "app": q.app,
        "ip": q.ip.to_string(),
        "query": q.query,
        "token": q.token,
        "custom": q.custom,
    })
}

/// WCS bodies: the object as the client sent it, with the fields a WCS backend reads
/// filled in when the client left them out.
fn wcs_body(q: &HookQuery) -> Json {
    let mut obj = match &q.object {
        Some(Json::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let mut fill = |k: &str, v: Json| {
        obj.entry(k.to_owned()).or_insert(v);
    };
    match q.action {
        HookAction::Connect => {
            fill("appKey", Json::String(q.app.clone()));
        }
        HookAction::Publish | HookAction::Play => {
            fill("name", Json::String(q.name.clone()));
            fill("mediaSessionId", Json::String(String::new()));
            fill("published", Json::Bool(q.action == HookAction::Publish));
        }
    }
    fill("custom", if q.custom.is_null() { Json::Object(Map::new()) } else { q.custom.clone() });
    fill("clientIp", Json::String(q.ip.to_string()));
    Json::Object(obj)
}

/// An AMF value as JSON (for Flash's connect object).
pub fn amf_to_json(v: &Amf) -> Json {
    match v {
        Amf::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Amf::Boolean(b) => Json::Bool(*b),
        Amf::String(s) | Amf::Xml(s) => Json::String(s.clone()),
        Amf::Object(kv) | Amf::EcmaArray(kv) => Json::Object(kv.iter().map(|(k, v)| (k.clone(), amf_to_json(v))).collect()),
        Amf::StrictArray(a) => Json::Array(a.iter().map(amf_to_json).collect()),
        Amf::Null | Amf::Undefined | Amf::ByteArray(_) => Json::Null,
        Amf::Date(ms) => serde_json::Number::from_f64(*ms).map_or(Json::Null, Json::Number),
    }
}

/// The helper threads' shared state.
struct Helper {
    url: HookUrl,
    timeout: Duration,
    senders: Mutex<Vec<Sender<HookVerdict>>>,
    wakers: Arc<Vec<Arc<mio::Waker>>>,
    /// path + body → (when answered, allowed or the denial).
    cache: Mutex<HashMap<String, Cached>>,
    pending: Arc<AtomicUsize>,
}

impl Helper {
    fn run(&self, queue: &Mutex<Receiver<Job>>) {
        loop {
            let job = match queue.lock() {
                Ok(q) => match q.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                },
                Err(_) => return,
            };
            let result = self.answer(&job);
            self.pending.fetch_sub(1, Ordering::SeqCst);
            let sent = match self.senders.lock() {
                Ok(s) => s.get(job.worker).is_some_and(|tx| tx.send(HookVerdict { ticket: job.ticket, result }).is_ok()),
                Err(_) => false,
            };
            if sent {
                if let Some(w) = self.wakers.get(job.worker) {
                    let _ = w.wake();
                }
            }
        }
    }

    fn answer(&self, job: &Job) -> Result<(), String> {
        let key = format!("{}\n{}", job.path, job.body);
        let now = Instant::now();
        if let Ok(c) = self.cache.lock() {
            if let Some((at, r)) = c.get(&key) {
                if now.saturating_duration_since(*at) < CACHE_TTL {
                    return r.clone();
                }
            }
        }
        if now >= job.deadline {
            return Err(timed_out(self.timeout));
        }
        let result = match post(&self.url, &job.path, &job.body, job.deadline) {
            Ok(status) => {
                let r = if (200..300).contains(&status) { Ok(()) } else { Err(format!("hook denied: HTTP {status}")) };
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() >= CACHE_MAX {
                        c.retain(|_, (at, _)| now.saturating_duration_since(*at) < CACHE_TTL);
                        if c.len() >= CACHE_MAX {
                            c.clear();
                        }
                    }
                    c.insert(key, (Instant::now(), r.clone()));
                }
                r
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => Err(timed_out(self.timeout)),
            Err(e) => Err(format!("hook unreachable: {e}")),
        };
        result
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

/// One POST; returns the response status. Every step is bounded by `deadline`.
fn post(url: &HookUrl, path: &str, body: &str, deadline: Instant) -> io::Result<u16> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port).to_socket_addrs()?.collect();
    let mut last = io::Error::other("host has no address");
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, remaining(deadline)?) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut s = sock.ok_or(last)?;
    let _ = s.set_nodelay(true);
    let host = if url.host.contains(':') { format!("[{}]:{}", url.host, url.port) } else { format!("{}:{}", url.host, url.port) };
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: rtcbridge\r\n\r\n{body}",
        body.len()
    );
    s.set_write_timeout(Some(remaining(deadline)?))?;
    s.write_all(req.as_bytes())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(status) = status_of(&head) {
            return status;
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::other("response head too long"));
        }
        s.set_read_timeout(Some(remaining(deadline)?))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed without an HTTP answer"));
        }
        head.extend_from_slice(buf.get(..n).unwrap_or(&[]));
    }
}

/// The status of a complete status line (`HTTP/1.x NNN ...\r\n`), once there is one.
fn status_of(head: &[u8]) -> Option<io::Result<u16>> {
    let end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(head.get(..end)?);
    let mut parts = line.split(' ');
    let proto = parts.next().unwrap_or("");
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    Some(match code {
        Some(c) if proto.starts_with("HTTP/1.") => Ok(c),
        _ => Err(io::Error::other("not an HTTP response")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("--auth-hook", "http://127.0.0.1:8080/auth").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/auth"));
        let u = parse_url("--auth-hook", "http://backend/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("backend", 80, ""));
        let u = parse_url("--auth-hook", "http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert!(parse_url("--auth-hook", "https://backend/").is_err());
        assert!(parse_url("--auth-hook", "http://:80/").is_err());
    }

    #[test]
    fn status_lines() {
        assert!(status_of(b"HTTP/1.1 20").is_none());
        assert_eq!(status_of(b"HTTP/1.1 204 No Content\r\n").unwrap().unwrap(), 204);
        assert_eq!(status_of(b"HTTP/1.0 403 Forbidden\r\nX: y").unwrap().unwrap(), 403);
        assert!(status_of(b"SSH-2.0-x\r\n").unwrap().is_err());
    }

    #[test]
    fn bodies() {
        let q = HookQuery {
            action: HookAction::Publish,
            protocol: "whip",
            name: "cam".into(),
            app: String::new(),
            ip: IpAddr::from([10, 0, 0, 1]),
            query: String::new(),
            token: None,
            custom: Json::Null,
            object: None,
        };
        let p = plain_body(&q);
        assert_eq!(p["action"], "publish");
        assert_eq!(p["ip"], "10.0.0.1");
        assert!(p["token"].is_null());
        let w = wcs_body(&q);
        assert_eq!(w["name"], "cam");
        assert_eq!(w["custom"], json!({}));
        let q = HookQuery { object: Some(json!({"name": "cam", "mediaSessionId": "m1", "custom": {"token": "t"}})), ..q };
        let w = wcs_body(&q);
        assert_eq!(w["mediaSessionId"], "m1");
        assert_eq!(w["custom"]["token"], "t");
    }

    #[test]
    fn pending_requests_are_bounded() {
        let (jobs, queue) = mpsc::sync_channel::<Job>(MAX_PENDING);
        let hook = Hook { jobs, pending: Arc::new(AtomicUsize::new(0)), wcs: false, path: String::new(), timeout: Duration::from_secs(2) };
        let q = HookQuery {
            action: HookAction::Play,
            protocol: "rtmp",
            name: "cam".into(),
            app: "live".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
            query: String::new(),
            token: None,
            custom: Json::Null,
            object: None,
        };
        let now = Instant::now();
        for t in 0..MAX_PENDING as u64 {
            assert!(hook.submit(0, t, &q, now).is_ok());
        }
        let err = hook.submit(0, 999, &q, now).unwrap_err();
        assert!(err.contains("too many pending auth-hook requests"), "{err}");
        // A finished request frees its place.
        let job = queue.recv().unwrap();
        assert_eq!((job.path.as_str(), job.deadline), ("/", now + Duration::from_secs(2)));
        hook.pending.fetch_sub(1, Ordering::SeqCst);
        assert!(hook.submit(0, 1000, &q, now).is_ok());
    }

    #[test]
    fn amf_objects() {
        let v = Amf::Object(vec![("login".into(), Amf::String("u".into())), ("n".into(), Amf::Number(2.0))]);
        assert_eq!(amf_to_json(&v), json!({"login": "u", "n": 2.0}));
    }
}
