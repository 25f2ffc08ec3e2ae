//! The process-wide table of RTMP pushes (restreams), for the API and /metrics.
//! Each push is driven by one worker (`worker/push.rs`); this table only holds
//! what the API shows: ids, destinations, states and counters.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Active pushes a server holds at most (API and rules together).
pub const MAX_ACTIVE: usize = 256;
/// Stopped pushes kept for the API (with their last error).
const KEEP_STOPPED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PushState {
    /// First attempt: resolving, connecting, handshake, connect, publish.
    Connecting = 0,
    /// The destination accepted the publish; media flows.
    Pushing = 1,
    /// Down after a failure, trying again with backoff.
    Retrying = 2,
    Stopped = 3,
}

impl PushState {
    pub const ALL: [PushState; 4] = [PushState::Connecting, PushState::Pushing, PushState::Retrying, PushState::Stopped];

    pub fn name(self) -> &'static str {
        match self {
            PushState::Connecting => "connecting",
            PushState::Pushing => "pushing",
            PushState::Retrying => "retrying",
            PushState::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> PushState {
        match v {
            0 => PushState::Connecting,
            1 => PushState::Pushing,
            2 => PushState::Retrying,
            _ => PushState::Stopped,
        }
    }
}

/// One push as the API shows it. Written by its worker, read by anyone.
#[derive(Debug)]
pub struct PushEntry {
    pub id: Arc<str>,
    pub stream: Arc<str>,
    /// The destination as given (credentials included): what duplicates are checked on.
    pub url: String,
    /// The destination with password and stream key redacted.
    pub shown_url: String,
    /// The worker that drives it.
    pub core: usize,
    /// Started by a `--push` rule (rather than the API or signaling).
    pub rule: bool,
    state: AtomicU8,
    pub bytes: AtomicU64,
    pub frames: AtomicU64,
    pub drops: AtomicU64,
    pub reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// DELETE asked on another worker; the owner stops it when its message arrives.
    pub stop_requested: AtomicBool,
}

impl PushEntry {
    pub fn new(id: Arc<str>, stream: Arc<str>, url: String, shown_url: String, core: usize, rule: bool) -> Self {
        PushEntry {
            id,
            stream,
            url,
            shown_url,
            core,
            rule,
            state: AtomicU8::new(PushState::Connecting as u8),
            bytes: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_error: Mutex::new(None),
            stop_requested: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> PushState {
        PushState::from_u8(self.state.load(Relaxed))
    }

    pub fn set_state(&self, s: PushState) {
        self.state.store(s as u8, Relaxed);
    }

    pub fn set_error(&self, why: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(why.to_owned());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": &*self.id,
            "stream": &*self.stream,
            "url": self.shown_url,
            "state": self.state().name(),
            "bytes": self.bytes.load(Relaxed),
            "frames": self.frames.load(Relaxed),
            "drops": self.drops.load(Relaxed),
            "reconnects": self.reconnects.load(Relaxed),
            "last_error": self.last_error(),
            "rule": self.rule,
            "worker": self.core,
        })
    }
}

/// Why a push cannot be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// An active push of the same stream to the same URL exists.
    Duplicate,
    /// [`MAX_ACTIVE`] pushes are active.
    Full,
}

#[derive(Debug, Default)]
pub struct PushTable {
    list: Mutex<Vec<Arc<PushEntry>>>,
    /// Totals over every push ever (the counters of removed entries are kept).
    pub bytes_total: AtomicU64,
    pub frames_total: AtomicU64,
    pub drops_total: AtomicU64,
    pub reconnects_total: AtomicU64,
}

impl PushTable {
    /// Add a push unless it duplicates an active one or the table is full.
    pub fn add(&self, e: Arc<PushEntry>) -> Result<(), AddError> {
        let Ok(mut list) = self.list.lock() else { return Err(AddError::Full) };
        let active = list.iter().filter(|x| x.state() != PushState::Stopped);
        let mut n = 0;
        for x in active {
            if x.stream == e.stream && x.url == e.url {
                return Err(AddError::Duplicate);
            }
            n += 1;
        }
        if n >= MAX_ACTIVE {
            return Err(AddError::Full);
        }
        list.push(e);
        // Forget the oldest stopped pushes beyond what the API keeps.
        let stopped = list.iter().filter(|x| x.state() == PushState::Stopped).count();
        let mut extra = stopped.saturating_sub(KEEP_STOPPED);
        list.retain(|x| {
            if extra > 0 && x.state() == PushState::Stopped {
                extra -= 1;
                return false;
            }
            true
        });
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<Arc<PushEntry>> {
        self.list.lock().ok()?.iter().find(|e| &*e.id == id).cloned()
    }

    /// An active push of `stream` to `url`, if any.
    pub fn active(&self, stream: &str, url: &str) -> Option<Arc<PushEntry>> {
        let list = self.list.lock().ok()?;
        list.iter().find(|e| e.state() != PushState::Stopped && &*e.stream == stream && e.url == url).cloned()
    }

    pub fn all(&self) -> Vec<Arc<PushEntry>> {
        self.list.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn list_json(&self) -> String {
        let pushes: Vec<serde_json::Value> = self.all().iter().map(|e| e.to_json()).collect();
        serde_json::json!({ "pushes": pushes }).to_string()
    }

    /// Prometheus lines: pushes by state, and the totals.
    pub fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let all = self.all();
        let _ = writeln!(out, "# HELP rtcbridge_pushes RTMP pushes (restreams) by state (stopped: the last {KEEP_STOPPED} kept for the API).");
        let _ = writeln!(out, "# TYPE rtcbridge_pushes gauge");
        for s in PushState::ALL {
            let n = all.iter().filter(|e| e.state() == s).count();
            let _ = writeln!(out, "rtcbridge_pushes{{state=\"{}\"}} {n}", s.name());
        }
        for (name, help, v) in [
            ("rtcbridge_push_bytes_total", "Bytes written to push destinations.", &self.bytes_total),
            ("rtcbridge_push_frames_total", "Frames queued to push destinations.", &self.frames_total),
            ("rtcbridge_push_reconnects_total", "Push connection attempts after a failure.", &self.reconnects_total),
            ("rtcbridge_push_drops_total", "Frames dropped for slow push destinations.", &self.drops_total),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(id: &str, stream: &str, url: &str) -> Arc<PushEntry> {
        Arc::new(PushEntry::new(id.into(), stream.into(), url.into(), url.into(), 0, false))
    }

    #[test]
    fn duplicates_refused_until_stopped_and_stopped_ones_are_bounded() {
        let t = PushTable::default();
        let a = entry("P-1", "s", "rtmp://h/a/k");
        t.add(Arc::clone(&a)).unwrap();
        assert_eq!(t.add(entry("P-2", "s", "rtmp://h/a/k")), Err(AddError::Duplicate));
        t.add(entry("P-3", "s", "rtmp://h/a/other")).unwrap();
        a.set_state(PushState::Stopped);
        t.add(entry("P-4", "s", "rtmp://h/a/k")).unwrap();
        for i in 0..100 {
            let e = entry(&format!("X-{i}"), "x", &format!("rtmp://h/a/{i}"));
            e.set_state(PushState::Stopped);
            t.add(e).unwrap();
        }
        let all = t.all();
        assert_eq!(all.iter().filter(|e| e.state() == PushState::Stopped).count(), KEEP_STOPPED);
        assert!(t.get("P-3").is_some() && t.get("P-4").is_some());
        let mut m = String::new();
        t.metrics(&mut m);
        assert!(m.contains("rtcbridge_pushes{state=\"connecting\"} 2"), "{m}");
    }
}
