//! The shell: threads, sockets, the clock. One mio event loop per worker
//! (pinned to a core unless `--no-pin`), SO_REUSEPORT listeners per worker,
//! a timer wheel per worker and a mesh of SPSC rings between workers.

pub mod access;
pub mod api;
pub mod cluster;
pub mod conn_io;
pub mod csprng;
pub mod hook;
pub mod limits;
pub mod mesh;
pub mod push;
pub mod slab;
pub mod timer;
pub mod tls;
pub mod transcode;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::relay::{Registry, WorkerStats};

/// State every worker can read: config, the registry, counters.
pub struct Shared {
    pub cfg: Config,
    pub registry: Arc<Registry>,
    /// Connection budgets per listener (`--max-conns`, `--max-conns-per-ip`).
    pub limits: limits::ConnLimits,
    /// WebRTC sessions created and not yet connected (`--max-pending-webrtc`, `-per-ip`).
    pub pending_webrtc: limits::AddrBudget<()>,
    /// WebRTC viewers (`--max-viewers`, `--max-viewers-per-ip`), from offer to end.
    pub viewers: limits::AddrBudget<()>,
    /// `--debug-faults`: a fault requested for each worker (`FAULT_*`), taken by the
    /// worker at its next heartbeat.
    pub faults: Vec<std::sync::atomic::AtomicU64>,
    pub workers: Vec<WorkerStats>,
    pub shutdown: AtomicBool,
    /// When the server started (GOP age in the API is measured from it).
    pub started: Instant,
    /// TLS server config for `--https` and `--rtmps`, when given.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// DTLS certificate and fingerprint shared by every WebRTC session.
    pub identity: crate::proto::dtls::DtlsIdentity,
    /// Tokens, API bearer tokens, allowed origins, WHIP session owners.
    pub access: access::Access,
    /// RTMP pushes (restreams), for the API and /metrics.
    pub pushes: push::PushTable,
    /// TLS client configuration of rtmps:// pushes (public roots + `--push-ca`).
    pub push_tls: Arc<rustls::ClientConfig>,
    /// Host name resolutions of pushes running on helper threads (bounded).
    pub push_resolving: std::sync::atomic::AtomicUsize,
    /// Cluster mode (`--cluster`): this node and the directory it last read.
    pub cluster: Option<Arc<cluster::Cluster>>,
}

/// Read the clock. The only place the process reads monotonic time.
pub fn now() -> Instant {
    Instant::now()
}

pub struct Server {
    shared: Arc<Shared>,
    wakers: Arc<Vec<Arc<mio::Waker>>>,
    threads: Vec<JoinHandle<()>>,
}

fn listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// Bind every worker's listeners, then start the workers.
pub fn start(cfg: Config) -> io::Result<Server> {
    let n = cfg.worker_count();
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry::default()),
        limits: limits::ConnLimits::new(cfg.max_conns, cfg.max_conns_per_ip),
        pending_webrtc: limits::AddrBudget::new(cfg.max_pending_webrtc, cfg.max_pending_webrtc_per_ip),
        viewers: limits::AddrBudget::new(cfg.max_viewers, cfg.max_viewers_per_ip),
        faults: (0..n).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        workers: (0..n).map(|_| WorkerStats::default()).collect(),
        shutdown: AtomicBool::new(false),
        started: now(),
        tls: match (cfg.https.is_some() || cfg.rtmps.is_some(), &cfg.tls_cert, &cfg.tls_key) {
            (true, Some(c), Some(k)) => {
                Some(tls::load_server_config(c, k).map_err(|e| io::Error::other(format!("--tls-cert/--tls-key: {e}")))?)
            }
            _ => None,
        },
        identity: crate::proto::dtls::DtlsIdentity::generate()
            .map_err(|e| io::Error::other(e.to_string()))?,
        access: access::Access::load(&cfg)?,
        pushes: push::PushTable::default(),
        push_tls: tls::load_client_config(cfg.push_ca.as_deref())
            .map_err(|e| io::Error::other(format!("--push-ca: {e}")))?
            .0,
        push_resolving: std::sync::atomic::AtomicUsize::new(0),
        cluster: cluster::Cluster::new(&cfg),
        cfg,
    });
    let mut polls = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = mio::Poll::new()?;
        wakers.push(Arc::new(mio::Waker::new(poll.registry(), worker::WAKER)?));
        let rtmp = listener(shared.cfg.rtmp)
            .map_err(|e| io::Error::new(e.kind(), format!("--rtmp {}: {e}", shared.cfg.rtmp)))?;
        let http = listener(shared.cfg.http)
            .map_err(|e| io::Error::new(e.kind(), format!("--http {}: {e}", shared.cfg.http)))?;
        let optional = |flag: &str, addr: Option<SocketAddr>| -> io::Result<Option<mio::net::TcpListener>> {
            addr.map(|a| listener(a).map_err(|e| io::Error::new(e.kind(), format!("{flag} {a}: {e}")))).transpose()
        };
        let https = optional("--https", shared.cfg.https)?;
        let rtmps = optional("--rtmps", shared.cfg.rtmps)?;
        listeners.push(worker::Listeners { rtmp, http, https, rtmps });
        polls.push(poll);
    }
    let wakers = Arc::new(wakers);
    let meshes = mesh::build(n, Arc::clone(&wakers));
    let mut hooks: Vec<Option<worker::HookPort>> = match hook::Hook::start(&shared.cfg, &wakers)? {
        Some((h, rxs)) => rxs.into_iter().map(|rx| Some(worker::HookPort { hook: Arc::clone(&h), verdicts: rx })).collect(),
        None => (0..n).map(|_| None).collect(),
    };
    let (mut cluster_rxs, cluster_thread) = cluster::start(&shared, &wakers)?;
    let cores = if shared.cfg.no_pin { None } else { core_affinity::get_core_ids() };
    let mut threads = Vec::with_capacity(n);
    for (id, ((poll, listeners), mesh)) in polls.into_iter().zip(listeners).zip(meshes).enumerate() {
        let shared = Arc::clone(&shared);
        let hook = hooks.get_mut(id).and_then(Option::take);
        let waker = wakers.get(id).cloned().ok_or_else(|| io::Error::other("worker without a waker"))?;
        let cluster_rx = cluster_rxs.get_mut(id).and_then(Option::take);
        let core = cores.as_ref().and_then(|c| c.get(id % c.len().max(1)).copied());
        let t = std::thread::Builder::new().name(format!("worker-{id}")).spawn(move || {
            if let Some(c) = core {
                if !core_affinity::set_for_current(c) {
                    crate::warn!("worker {id}: could not pin to core {}", c.id);
                }
            }
            let run = std::panic::AssertUnwindSafe(|| worker::Worker::new(id, Arc::clone(&shared), poll, listeners, mesh, worker::Ports { hook, waker, cluster_rx }).and_then(|w| w.run()));
            match std::panic::catch_unwind(run) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // A worker that stops serving: /healthz reports it from now on.
                    shared.workers[id].failed.store(true, Ordering::SeqCst);
                    crate::error!("worker {id} stopped: {e}");
                }
                Err(panic) => {
                    // Supervision policy (README "Supervision"): a panic anywhere in a worker
                    // aborts the whole process, so the service manager restarts it with every
                    // name released; nothing half-dead keeps /healthz ok or names claimed.
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".into());
                    crate::error!("worker {id} panicked: {msg}; aborting the process (the service manager restarts it)");
                    crate::log::flush();
                    std::process::abort();
                }
            }
        })?;
        threads.push(t);
    }
    threads.extend(cluster_thread);
    Ok(Server { shared, wakers, threads })
}

impl Server {
    /// What is open to anyone (for the start-up warning).
    pub fn open_parts(&self) -> Vec<&'static str> {
        self.shared.access.open_parts()
    }

    /// Ask every worker to close its connections and stop; wait up to `limit`.
    pub fn shutdown(self, limit: Duration) -> bool {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        for w in self.wakers.iter() {
            let _ = w.wake();
        }
        if let Some(c) = &self.shared.cluster {
            c.nudge();
        }
        let deadline = now() + limit;
        for t in self.threads {
            while !t.is_finished() && now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !t.is_finished() {
                return false;
            }
            let _ = t.join();
        }
        true
    }
}
