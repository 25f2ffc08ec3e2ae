//! Cluster mode (`--cluster redis://...`): the stream directory in Redis.
//!
//! One control thread per process owns the only Redis connection (blocking,
//! with timeouts); the per-core loops never touch Redis and never wait for it.
//! Twice a second the thread:
//! - writes this node's heartbeat (`rtcbridge:node:ID`, a JSON value with a
//!   counter, under a lease of `--cluster-lease`);
//! - registers every stream this node originates (`rtcbridge:stream:NAME` →
//!   `ID URL`, set-if-absent with the lease, refreshed only while the value is
//!   still ours, deleted only while it is ours: Lua compare-and-set), and takes
//!   over a name whose owner node is dead;
//! - reads the whole directory back, judges nodes alive by their heartbeat
//!   counter moving (not by clocks), and hands the registry the streams other
//!   live nodes own: a local publish of such a name is refused as a duplicate;
//! - asks a worker to pull (an RTMP play from the owner, published locally) a
//!   name that has local players waiting and a live owner elsewhere, and to
//!   end a pull whose origin is gone or moved.
//!
//! Redis unreachable: local streams and existing pulls go on, the error is
//! logged at most once a second, remote plays are refused with the reason, and
//! everything is registered again when Redis is back.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{now, Shared};
use crate::proto::resp::{encode_command, parse_reply, Reply};

/// The control thread's period.
pub const TICK: Duration = Duration::from_millis(500);
/// Redis connect and I/O timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// A Redis reply may take at most this much buffer (the directory of 100,000
/// streams is a few MB).
const MAX_REPLY_BYTES: usize = 64 << 20;
/// Nudged ticks come at most this often (a play of a name that is not live nudges).
const MIN_TICK_GAP: Duration = Duration::from_millis(100);
/// A pull is not asked for again sooner than this.
const PULL_RETRY: Duration = Duration::from_secs(1);
const STREAM_PREFIX: &str = "rtcbridge:stream:";
const NODE_PREFIX: &str = "rtcbridge:node:";

const LUA_REFRESH: &str = "if redis.call('GET',KEYS[1])==ARGV[1] then return redis.call('PEXPIRE',KEYS[1],ARGV[2]) else return 0 end";
const LUA_DEL_IF: &str = "if redis.call('GET',KEYS[1])==ARGV[1] then return redis.call('DEL',KEYS[1]) else return 0 end";
const LUA_SWAP: &str = "if redis.call('GET',KEYS[1])==ARGV[1] then redis.call('SET',KEYS[1],ARGV[2],'PX',ARGV[3]) return 1 else return 0 end";

/// `redis://[:PASSWORD@]HOST[:PORT][/DB]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub password: Option<String>,
}

impl RedisUrl {
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        let rest = s.strip_prefix("redis://").ok_or("expected redis://[:PASSWORD@]HOST[:PORT][/DB]")?;
        let (auth_host, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, d)) => (a, d.parse::<u32>().map_err(|_| format!("bad database number '{d}'"))?),
            None => (rest, 0),
        };
        let (password, hostport) = match auth_host.rsplit_once('@') {
            Some((u, h)) => {
                let pw = u.split_once(':').map_or(u, |(_, p)| p);
                (Some(pw.to_owned()).filter(|p| !p.is_empty()), h)
            }
            None => (None, auth_host),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?),
            None => (hostport, 6379),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(RedisUrl { host: host.trim_matches(|c| c == '[' || c == ']').to_owned(), port, db, password })
    }
}

/// What the control thread asks a worker to do.
#[derive(Debug)]
pub enum WorkerCmd {
    /// Pull `name` from the node at `url` (rtmp://HOST:PORT), as a local stream.
    StartPull { name: Arc<str>, url: String },
    /// End the pull of `name` (its origin is gone or moved).
    StopPull { name: Arc<str> },
}

/// A node as the directory shows it.
#[derive(Debug, Clone)]
struct NodeSeen {
    id: String,
    info: serde_json::Value,
    hb: u64,
    changed: Instant,
    alive: bool,
}

/// What the API shows, refreshed every tick.
#[derive(Debug, Default)]
struct View {
    nodes: Vec<NodeSeen>,
    /// (name, node id, node url, owner alive): the keys as Redis holds them (a dead
    /// node's stay until their lease runs out).
    streams: Vec<(String, String, String, bool)>,
    error: Option<String>,
}

/// The cluster state every thread can read.
#[derive(Debug)]
pub struct Cluster {
    pub node_id: String,
    pub node_url: String,
    /// Redis answered at the last tick.
    pub redis_ok: AtomicBool,
    view: Mutex<View>,
    /// Workers wake the control thread (a remote play is waiting).
    nudge: Mutex<Option<SyncSender<()>>>,
    /// Node URLs a pull could not reach or lost (connection refused, reset), and
    /// when: a node whose heartbeat has not moved since is dead at once, without
    /// waiting for its heartbeat to go stale (a killed node's port refuses at once).
    unreachable: Mutex<HashMap<String, Instant>>,
}

impl Cluster {
    pub fn new(cfg: &crate::config::Config) -> Option<Arc<Cluster>> {
        cfg.cluster.as_ref()?;
        Some(Arc::new(Cluster {
            node_id: super::csprng::hex128().chars().take(16).collect(),
            node_url: cfg.node_url(),
            // Optimistic until the first tick says otherwise (≤ one TICK).
            redis_ok: AtomicBool::new(true),
            view: Mutex::new(View::default()),
            nudge: Mutex::new(None),
            unreachable: Mutex::new(HashMap::new()),
        }))
    }

    /// A pull could not reach the node at `url`, or lost it: the control thread
    /// looks again now.
    pub fn origin_unreachable(&self, url: &str, at: Instant) {
        if let Ok(mut m) = self.unreachable.lock() {
            m.insert(url.to_owned(), at);
        }
        self.nudge();
    }

    /// Ask the control thread to look now (a player waits for a remote stream; shutdown).
    pub fn nudge(&self) {
        if let Ok(g) = self.nudge.lock() {
            if let Some(tx) = g.as_ref() {
                // One pending nudge is enough (a full channel means one is pending).
                let _ = tx.try_send(());
            }
        }
    }

    /// `GET /api/cluster`.
    pub fn to_json(&self) -> serde_json::Value {
        let at = now();
        let Ok(v) = self.view.lock() else { return serde_json::Value::Null };
        let nodes: Vec<serde_json::Value> = v
            .nodes
            .iter()
            .map(|n| {
                let mut o = n.info.clone();
                if let Some(m) = o.as_object_mut() {
                    m.insert("alive".into(), n.alive.into());
                    m.insert("self".into(), (n.id == self.node_id).into());
                    m.insert("heartbeat_changed_ms_ago".into(), (at.saturating_duration_since(n.changed).as_millis() as u64).into());
                }
                o
            })
            .collect();
        let directory: Vec<serde_json::Value> =
            v.streams.iter().map(|(name, node, url, alive)| serde_json::json!({ "name": name, "node": node, "url": url, "owner_alive": alive })).collect();
        serde_json::json!({
            "node": { "id": self.node_id, "url": self.node_url },
            "redis": if self.redis_ok.load(Ordering::Relaxed) { "ok".to_owned() } else { format!("unreachable: {}", v.error.clone().unwrap_or_default()) },
            "nodes": nodes,
            "directory": directory,
        })
    }

    /// `GET /api/lb`: the live node with the fewest publishers, in the shape of
    /// the Flashphoner SDK's `lbUrl` answer.
    pub fn lb_json(&self) -> Option<serde_json::Value> {
        let v = self.view.lock().ok()?;
        let best = v
            .nodes
            .iter()
            .filter(|n| n.alive)
            .min_by_key(|n| (n.info.get("publishers").and_then(serde_json::Value::as_u64).unwrap_or(0), n.id.clone()))?;
        let http = best.info.get("http").and_then(serde_json::Value::as_str).unwrap_or("");
        let https = best.info.get("https").and_then(serde_json::Value::as_str);
        let server = http.rsplit_once(':').map_or(http, |(h, _)| h);
        Some(serde_json::json!({
            "server": server,
            "ws": format!("ws://{http}"),
            "wss": https.map(|h| format!("wss://{h}")),
            "node": best.id,
        }))
    }
}

/// Each worker's end of the control thread's command queue (None off-cluster).
pub type WorkerQueues = Vec<Option<Receiver<WorkerCmd>>>;

/// Start the control thread; returns each worker's end of the command queue and
/// the thread (it leaves the directory at shutdown).
pub fn start(shared: &Arc<Shared>, wakers: &Arc<Vec<Arc<mio::Waker>>>) -> io::Result<(WorkerQueues, Option<std::thread::JoinHandle<()>>)> {
    let n = wakers.len();
    let (Some(cluster), Some(url)) = (shared.cluster.clone(), shared.cfg.cluster.as_deref()) else {
        return Ok(((0..n).map(|_| None).collect(), None));
    };
    let url = RedisUrl::parse(url).map_err(io::Error::other)?;
    let mut txs = Vec::with_capacity(n);
    let mut rxs = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        txs.push(tx);
        rxs.push(Some(rx));
    }
    let (nudge_tx, nudge_rx) = std::sync::mpsc::sync_channel(1);
    if let Ok(mut g) = cluster.nudge.lock() {
        *g = Some(nudge_tx);
    }
    let mut ctl = Control {
        shared: Arc::clone(shared),
        cluster,
        url,
        workers: txs,
        wakers: Arc::clone(wakers),
        conn: None,
        mine: HashSet::new(),
        hb: 0,
        seen: HashMap::new(),
        pull_asked: HashMap::new(),
        pulls: HashMap::new(),
        last_error_log: None,
        errors_unlogged: 0,
        down_since: None,
        conflicts_logged: HashMap::new(),
    };
    crate::info!("cluster: node {} at {} (Redis {}:{})", ctl.cluster.node_id, ctl.cluster.node_url, ctl.url.host, ctl.url.port);
    let t = std::thread::Builder::new().name("cluster".into()).spawn(move || ctl.run(&nudge_rx))?;
    Ok((rxs, Some(t)))
}

struct Control {
    shared: Arc<Shared>,
    cluster: Arc<Cluster>,
    url: RedisUrl,
    workers: Vec<Sender<WorkerCmd>>,
    wakers: Arc<Vec<Arc<mio::Waker>>>,
    conn: Option<RedisConn>,
    /// Names this node registered (value `ID URL`).
    mine: HashSet<Arc<str>>,
    hb: u64,
    seen: HashMap<String, NodeSeen>,
    pull_asked: HashMap<Arc<str>, Instant>,
    /// Pulls asked for, by name: the origin URL.
    pulls: HashMap<Arc<str>, String>,
    last_error_log: Option<Instant>,
    errors_unlogged: u64,
    down_since: Option<Instant>,
    conflicts_logged: HashMap<Arc<str>, Instant>,
}

impl Control {
    fn run(&mut self, nudge: &Receiver<()>) {
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.leave();
                return;
            }
            let began = now();
            match self.tick(began) {
                Ok(()) => {
                    if self.down_since.take().is_some() {
                        crate::info!("cluster: Redis {}:{} reachable again; streams registered again", self.url.host, self.url.port);
                    }
                    self.cluster.redis_ok.store(true, Ordering::Relaxed);
                }
                Err(e) => self.redis_down(began, &e),
            }
            let wait = TICK.saturating_sub(now().saturating_duration_since(began));
            match nudge.recv_timeout(wait) {
                Ok(()) => {
                    // Nudges cannot make Redis round trips back to back.
                    let gap = MIN_TICK_GAP.saturating_sub(now().saturating_duration_since(began));
                    std::thread::sleep(gap);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
            // Several nudges at once make one extra tick.
            while nudge.try_recv().is_ok() {}
        }
    }

    fn redis_down(&mut self, at: Instant, e: &io::Error) {
        self.conn = None;
        self.cluster.redis_ok.store(false, Ordering::Relaxed);
        // Our entries will be registered again from scratch when Redis returns.
        self.mine.clear();
        let since = *self.down_since.get_or_insert(at);
        if let Ok(mut v) = self.cluster.view.lock() {
            v.error = Some(e.to_string());
        }
        // Other nodes' leases have run out by now: forget who owned what.
        if at.saturating_duration_since(since) >= self.shared.cfg.cluster_lease() {
            self.shared.registry.set_remote(HashMap::new());
        }
        if self.last_error_log.is_some_and(|t| at.saturating_duration_since(t) < Duration::from_secs(1)) {
            self.errors_unlogged += 1;
            return;
        }
        let more = std::mem::take(&mut self.errors_unlogged);
        self.last_error_log = Some(at);
        let extra = if more > 0 { format!(" ({more} more failures in the last second)") } else { String::new() };
        crate::warn!(
            "cluster: Redis {}:{} unreachable: {e}{extra}; serving local streams, refusing remote plays",
            self.url.host,
            self.url.port
        );
    }

    fn conn(&mut self) -> io::Result<&mut RedisConn> {
        if self.conn.is_none() {
            self.conn = Some(RedisConn::open(&self.url)?);
        }
        self.conn.as_mut().ok_or_else(|| io::Error::other("no connection"))
    }

    fn lease_ms(&self) -> String {
        self.shared.cfg.cluster_lease().as_millis().to_string()
    }

    fn my_value(&self) -> String {
        format!("{} {}", self.cluster.node_id, self.cluster.node_url)
    }

    fn tick(&mut self, at: Instant) -> io::Result<()> {
        let lease = self.lease_ms();
        let me = self.my_value();
        // 1. Heartbeat.
        self.hb += 1;
        let rows = self.shared.registry.live();
        let local: Vec<Arc<str>> = rows.iter().filter(|r| r.source != "pull").map(|r| Arc::clone(&r.name)).collect();
        let players: i64 = self.shared.workers.iter().map(|w| w.players.load(Ordering::Relaxed)).sum();
        let publishers: i64 = self.shared.workers.iter().map(|w| w.publishers.load(Ordering::Relaxed)).sum();
        let cfg = &self.shared.cfg;
        let http_host = |a: std::net::SocketAddr| {
            if a.ip().is_unspecified() {
                let host = self.cluster.node_url.trim_start_matches("rtmp://").trim_start_matches("rtmps://");
                let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
                format!("{h}:{}", a.port())
            } else {
                a.to_string()
            }
        };
        let info = serde_json::json!({
            "id": self.cluster.node_id,
            "url": self.cluster.node_url,
            "http": http_host(cfg.http),
            "https": cfg.https.map(http_host),
            "hb": self.hb,
            "streams": local.len(),
            "players": players.max(0),
            "publishers": publishers.max(0),
        })
        .to_string();
        let node_key = format!("{NODE_PREFIX}{}", self.cluster.node_id);
        self.conn()?.cmd(&[b"SET", node_key.as_bytes(), info.as_bytes(), b"PX", lease.as_bytes()])?;
        // 2. Who is alive (before taking over any name: a node not seen yet is alive).
        let node_vals = self.read_prefix(NODE_PREFIX)?;
        let unreachable: HashMap<String, Instant> = match self.cluster.unreachable.lock() {
            Ok(mut m) => {
                m.retain(|_, t| at.saturating_duration_since(*t) < Duration::from_secs(60));
                m.clone()
            }
            Err(_) => HashMap::new(),
        };
        let mut present = HashSet::new();
        let dead_after = self.dead_after();
        for (key, val) in node_vals {
            let Some(id) = key.strip_prefix(NODE_PREFIX).map(str::to_owned) else { continue };
            let info: serde_json::Value = serde_json::from_str(&val).unwrap_or(serde_json::Value::Null);
            let hb = info.get("hb").and_then(serde_json::Value::as_u64).unwrap_or(0);
            let e = self.seen.entry(id.clone()).or_insert_with(|| NodeSeen { id: id.clone(), info: info.clone(), hb, changed: at, alive: true });
            if e.hb != hb {
                e.hb = hb;
                e.changed = at;
            }
            let url = info.get("url").and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
            e.info = info;
            // Unreachable by a pull since its last heartbeat, and that heartbeat more than
            // two ticks old: dead now (a live node beats every tick; a node that merely
            // refused or closed one pull keeps beating and stays alive).
            let unreachable_since_beat =
                unreachable.get(&url).is_some_and(|t| *t >= e.changed) && at.saturating_duration_since(e.changed) > TICK * 2;
            e.alive = id == self.cluster.node_id || (at.saturating_duration_since(e.changed) < dead_after && !unreachable_since_beat);
            present.insert(id);
        }
        self.seen.retain(|id, _| present.contains(id));
        // 3. Our streams.
        let local_set: HashSet<Arc<str>> = local.iter().cloned().collect();
        for name in &local {
            let key = format!("{STREAM_PREFIX}{name}");
            if self.mine.contains(name) {
                let r = self.conn()?.eval(LUA_REFRESH, &key, &[me.as_bytes(), lease.as_bytes()])?;
                if r.as_int() == Some(1) {
                    continue;
                }
                self.mine.remove(name);
            }
            let r = self.conn()?.cmd(&[b"SET", key.as_bytes(), me.as_bytes(), b"NX", b"PX", lease.as_bytes()])?;
            if r != Reply::Nil {
                crate::debug!("cluster: registered {}", crate::log::peer_str(name));
                self.mine.insert(Arc::clone(name));
                continue;
            }
            let Some(old) = self.conn()?.cmd(&[b"GET", key.as_bytes()])?.as_str().map(str::to_owned) else { continue };
            if old == me {
                // Ours already (registered before a Redis error made us forget it).
                self.mine.insert(Arc::clone(name));
                continue;
            }
            let owner = old.split(' ').next().unwrap_or("").to_owned();
            if !self.node_alive(&owner) {
                let r = self.conn()?.eval(LUA_SWAP, &key, &[old.as_bytes(), me.as_bytes(), lease.as_bytes()])?;
                if r.as_int() == Some(1) {
                    crate::info!("cluster: took over {} from dead node {owner}", crate::log::peer_str(name));
                    self.mine.insert(Arc::clone(name));
                }
                continue;
            }
            let logged = self.conflicts_logged.get(name).is_some_and(|t| at.saturating_duration_since(*t) < Duration::from_secs(10));
            if !logged {
                self.conflicts_logged.insert(Arc::clone(name), at);
                crate::warn!("cluster: {} is published here and on node {owner} (both publishers arrived at once); the directory keeps node {owner}", crate::log::peer_str(name));
            }
        }
        let gone: Vec<Arc<str>> = self.mine.iter().filter(|n| !local_set.contains(*n)).cloned().collect();
        for name in gone {
            let key = format!("{STREAM_PREFIX}{name}");
            self.conn()?.eval(LUA_DEL_IF, &key, &[me.as_bytes()])?;
            self.mine.remove(&name);
            crate::debug!("cluster: unregistered {}", crate::log::peer_str(&name));
        }
        // 4. The directory.
        let stream_vals = self.read_prefix(STREAM_PREFIX)?;
        let mut remote: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        let mut listing = Vec::new();
        for (key, val) in stream_vals {
            let Some(name) = key.strip_prefix(STREAM_PREFIX).map(str::to_owned) else { continue };
            let (owner, url) = val.split_once(' ').unwrap_or((val.as_str(), ""));
            listing.push((name.clone(), owner.to_owned(), url.to_owned(), self.node_alive(owner)));
            if owner != self.cluster.node_id && self.node_alive(owner) && !url.is_empty() {
                remote.insert(name.into(), url.into());
            }
        }
        listing.sort();
        self.shared.registry.set_remote(remote.clone());
        // 5. Pulls: start the wanted ones, end the ones whose origin is gone or moved.
        for (name, core) in self.shared.registry.pulls() {
            let want = remote.get(&name);
            let have = self.pulls.get(&name);
            if want.is_none() || (have.is_some() && want.map(|u| &**u) != have.map(String::as_str)) {
                self.pulls.remove(&name);
                self.send(core, WorkerCmd::StopPull { name });
            }
        }
        self.pulls.retain(|name, _| remote.contains_key(name));
        for name in self.shared.registry.waiting() {
            let Some(url) = remote.get(&name) else { continue };
            if self.pull_asked.get(&name).is_some_and(|t| at.saturating_duration_since(*t) < PULL_RETRY) {
                continue;
            }
            self.pull_asked.insert(Arc::clone(&name), at);
            self.pulls.insert(Arc::clone(&name), url.to_string());
            let w = worker_for(&name, self.workers.len());
            self.send(w, WorkerCmd::StartPull { name, url: url.to_string() });
        }
        self.pull_asked.retain(|_, t| at.saturating_duration_since(*t) < Duration::from_secs(60));
        self.conflicts_logged.retain(|_, t| at.saturating_duration_since(*t) < Duration::from_secs(60));
        if let Ok(mut v) = self.cluster.view.lock() {
            v.nodes = self.seen.values().cloned().collect();
            v.nodes.sort_by(|a, b| a.id.cmp(&b.id));
            v.streams = listing;
            v.error = None;
        }
        Ok(())
    }

    fn dead_after(&self) -> Duration {
        (self.shared.cfg.cluster_lease() * 3 / 5).max(TICK * 3)
    }

    fn node_alive(&self, id: &str) -> bool {
        id == self.cluster.node_id || self.seen.get(id).is_some_and(|n| n.alive)
    }

    fn send(&self, worker: usize, cmd: WorkerCmd) {
        if let Some(tx) = self.workers.get(worker) {
            let _ = tx.send(cmd);
            if let Some(w) = self.wakers.get(worker) {
                let _ = w.wake();
            }
        }
    }

    /// Every key under `prefix` with its value (SCAN, then MGET).
    fn read_prefix(&mut self, prefix: &str) -> io::Result<Vec<(String, String)>> {
        let pattern = format!("{prefix}*");
        let mut cursor = "0".to_owned();
        let mut keys: Vec<String> = Vec::new();
        loop {
            let r = self.conn()?.cmd(&[b"SCAN", cursor.as_bytes(), b"MATCH", pattern.as_bytes(), b"COUNT", b"1000"])?;
            let Reply::Array(mut parts) = r else { return Err(io::Error::other("SCAN: unexpected reply")) };
            let batch = parts.pop();
            cursor = parts.pop().and_then(|c| c.as_str().map(str::to_owned)).unwrap_or_else(|| "0".into());
            if let Some(Reply::Array(ks)) = batch {
                keys.extend(ks.iter().filter_map(|k| k.as_str().map(str::to_owned)));
            }
            if cursor == "0" || keys.len() > 100_000 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(chunk.iter().map(|k| k.as_bytes()));
            let Reply::Array(vals) = self.conn()?.cmd(&args)? else { return Err(io::Error::other("MGET: unexpected reply")) };
            for (k, v) in chunk.iter().zip(vals) {
                if let Some(v) = v.as_str() {
                    out.push((k.clone(), v.to_owned()));
                }
            }
        }
        Ok(out)
    }

    /// Shutdown: our entries go at once (other nodes need not wait for the lease).
    fn leave(&mut self) {
        let me = self.my_value();
        let names: Vec<Arc<str>> = self.mine.drain().collect();
        let node_key = format!("{NODE_PREFIX}{}", self.cluster.node_id);
        if let Ok(c) = self.conn() {
            for name in names {
                let _ = c.eval(LUA_DEL_IF, &format!("{STREAM_PREFIX}{name}"), &[me.as_bytes()]);
            }
            let _ = c.cmd(&[b"DEL", node_key.as_bytes()]);
        }
    }
}

/// The worker that pulls `name` (stable, spreads names over workers).
fn worker_for(name: &str, n: usize) -> usize {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h % n.max(1) as u64) as usize
}

/// One blocking Redis connection with timeouts.
struct RedisConn {
    sock: TcpStream,
    rx: Vec<u8>,
}

impl RedisConn {
    fn open(url: &RedisUrl) -> io::Result<RedisConn> {
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{}: no address", url.host)))?;
        let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        sock.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = sock.set_nodelay(true);
        let mut c = RedisConn { sock, rx: Vec::new() };
        if let Some(pw) = &url.password {
            c.cmd(&[b"AUTH", pw.as_bytes()])?;
        }
        if url.db != 0 {
            c.cmd(&[b"SELECT", url.db.to_string().as_bytes()])?;
        }
        Ok(c)
    }

    /// One command, one reply; a Redis error reply is an `Err`.
    fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.sock.write_all(&out)?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some((r, n)) = parse_reply(&self.rx).map_err(io::Error::other)? {
                self.rx.drain(..n);
                if let Reply::Error(e) = r {
                    return Err(io::Error::other(format!("Redis: {e}")));
                }
                return Ok(r);
            }
            if self.rx.len() > MAX_REPLY_BYTES {
                return Err(io::Error::other(format!("Redis reply over {MAX_REPLY_BYTES} bytes")));
            }
            let n = self.sock.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "Redis closed the connection"));
            }
            self.rx.extend_from_slice(buf.get(..n).unwrap_or(&[]));
        }
    }

    fn eval(&mut self, script: &str, key: &str, args: &[&[u8]]) -> io::Result<Reply> {
        let mut a: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), b"1", key.as_bytes()];
        a.extend_from_slice(args);
        self.cmd(&a)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_urls() {
        assert_eq!(RedisUrl::parse("redis://127.0.0.1:6380").unwrap(), RedisUrl { host: "127.0.0.1".into(), port: 6380, db: 0, password: None });
        assert_eq!(
            RedisUrl::parse("redis://:s3cret@cache.local/2").unwrap(),
            RedisUrl { host: "cache.local".into(), port: 6379, db: 2, password: Some("s3cret".into()) }
        );
        assert_eq!(RedisUrl::parse("redis://user:pw@h:1/").unwrap().password.as_deref(), Some("pw"));
        assert!(RedisUrl::parse("http://h").is_err());
        assert!(RedisUrl::parse("redis://h:x").is_err());
        assert!(RedisUrl::parse("redis://:1").is_err());
    }

    #[test]
    fn names_spread_over_workers_stably() {
        assert_eq!(worker_for("cam", 4), worker_for("cam", 4));
        assert!(worker_for("a", 1) == 0);
        let used: HashSet<usize> = (0..64).map(|i| worker_for(&format!("s{i}"), 4)).collect();
        assert_eq!(used.len(), 4);
    }
}
