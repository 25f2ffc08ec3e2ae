//! Command-line flags, parsed and validated once (DESIGN.md §2).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What a player gets when it plays a name nobody publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnknownStream {
    /// Answer NetStream.Play.Start and wait; PublishNotify when a publisher arrives.
    Wait,
    /// Answer NetStream.Play.StreamNotFound.
    NotFound,
}

/// Audio sent to RTMP players of WebRTC streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AudioMode {
    /// Opus transcoded once per stream to AAC-LC 48 kHz: every RTMP player can decode it.
    Aac,
    /// Enhanced RTMP Opus to players whose connect lists "Opus" in fourCcList, AAC to the rest.
    Opus,
    /// No audio to RTMP players.
    None,
}

/// Which actions need a token (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Publishing needs a token; playing is open.
    Publish,
    /// Playing needs a token; publishing is open.
    Play,
    /// Both need one.
    All,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "rtcbridge",
    version,
    about = "WebRTC-to-RTMP relay: browsers (and RTMP encoders) publish, RTMP players play.",
    long_about = "rtcbridge takes live video published from a web browser over WebRTC (the Flashphoner \
Web SDK's WebSocket protocol, or WHIP) or from an RTMP encoder, and serves it to RTMP players \
(ffmpeg, VLC, OBS, nginx-rtmp/SRS edges, Flash) at rtmp://HOST:1935/live/NAME.\n\n\
Open http://HOST:8080/ to publish from this browser (https with --https for other hosts). \
One event loop per core (a thin shell over sockets) drives that core's relay: every \
decision about streams (joins, the GOP cache, grace windows, status events, which frame each \
player gets, how soon it is written) is made there and applied by the loop; every player is \
a sink of a stream, and each frame is built once and shared by all of them. See README.md for \
the architecture and the benchmarks.\n\n\
RTMPS (RTMP over TLS) with --rtmps and a certificate.\n\n\
Access control (README \"Security\"): everything is open unless configured. --auth-secret \
enables signed tokens (make them with `rtcbridge token --secret FILE --publish NAME --ttl 1h`), \
--auth-hook (or --auth-hook-wcs) asks an HTTP backend (plain http:// only) before each \
connect, publish and play, --api-token and --metrics-token protect the HTTP API, \
--allowed-origin restricts browsers.\n\n\
Restream (README \"Restream\"): push any stream to other RTMP servers (YouTube, Twitch, a CDN, \
nginx-rtmp, SRS) with --push NAME=URL, POST /api/push {\"stream\", \"url\"} or Flashphoner \
rtmpUrl; rtmps:// destinations are checked against the public roots and --push-ca. A push \
that fails is retried with backoff and resumes on a keyframe.\n\n\
WebRTC playback (README \"WebRTC playback\"): browsers play any live stream over WebRTC, \
whatever published it: Flashphoner playStream (the SDK's Player and Two Way Streaming pages, \
the demo page's Play panel) or WHEP (POST /whep/NAME). H.264 goes out as it came; AAC from \
RTMP sources becomes Opus once per stream; H.264 with B-frames is transcoded to constrained \
baseline only with --transcode."
)]
pub struct Config {
    /// HTTP listen address: the demo page (/), Flashphoner-compatible WebSocket signaling (any
    /// path), WHIP (/whip/NAME), WHEP (/whep/NAME), /api/streams, /metrics, /healthz.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub http: SocketAddr,

    /// RTMP listen address, for players and for RTMP encoders that publish.
    #[arg(long, default_value = "0.0.0.0:1935", value_name = "ADDR")]
    pub rtmp: SocketAddr,

    /// HTTPS listen address (same routes as --http, and wss:// signaling): browsers grant the
    /// camera only to https pages or localhost. Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,

    /// RTMPS listen address: RTMP over TLS (rtmps://HOST:PORT/live/NAME), for players and
    /// encoders that require TLS; the same streams as --rtmp. Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR")]
    pub rtmps: Option<SocketAddr>,

    /// PEM certificate chain for --https and --rtmps.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key (PKCS#8, RSA or SEC1) for --https and --rtmps.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,

    /// First UDP media port for WebRTC: worker i owns PORT+i (ICE, DTLS, SRTP on one port).
    #[arg(long, default_value_t = 20000, value_name = "PORT")]
    pub udp_port: u16,

    /// ICE host candidate address to announce (repeatable). Default: the local address the
    /// publisher's or viewer's signaling connection (WebSocket, WHIP, WHEP) arrived on.
    #[arg(long = "public-ip", value_name = "IP")]
    pub public_ip: Vec<IpAddr>,

    /// Announce this UDP port (plus the worker index) in ICE candidates instead of
    /// --udp-port: for a port forward or NAT in front of the server.
    #[arg(long, value_name = "PORT")]
    pub candidate_port: Option<u16>,

    /// Number of worker event loops (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Do not pin worker threads to cores.
    #[arg(long)]
    pub no_pin: bool,

    /// Log level: error, warn, info, debug, trace. Logs go to stderr.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log: crate::log::Level,

    /// Seconds players wait for a publisher that dropped to come back before they get
    /// NetStream.Play.UnpublishNotify (ffmpeg ends its stream on it).
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub unpublish_grace: f64,

    /// H.264 transcodes for WebRTC viewers, per worker core: a stream whose H.264 has
    /// B-frames (OBS's x264 default), or a profile the viewer did not offer, is decoded
    /// and encoded again as constrained baseline (openh264) once per stream, on its
    /// publisher's core, while it has such viewers. `--transcode` alone: 2 per core.
    /// Absent or 0: such viewers get FAILED "Transcoding required, but disabled".
    #[arg(long, value_name = "N", num_args = 0..=1, default_value_t = 0, default_missing_value = "2")]
    pub transcode: u32,

    /// Playing a name that nobody publishes: wait for a publisher, or answer StreamNotFound.
    /// Unset: RTMP players wait (and get PublishNotify), WebRTC viewers (playStream, WHEP)
    /// get FAILED "Stream not found" / 404, as Flashphoner clients expect.
    #[arg(long, value_enum, value_name = "MODE")]
    pub unknown_stream: Option<UnknownStream>,

    /// Per-player send queue limit in KiB. Beyond it a player loses inter frames first
    /// (resuming at the next keyframe); beyond twice it keyframes; beyond three times audio.
    #[arg(long, default_value_t = 1024, value_name = "KB")]
    pub player_queue_kb: usize,

    /// Disconnect a player whose queue stays over its limit this many seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub evict_after: f64,

    /// Most TCP connections each listener (RTMP, HTTP, and RTMPS/HTTPS when on) holds at
    /// once, over all workers. Beyond it a new connection is closed at once (counted in
    /// /metrics as rtcbridge_connections_refused_total{reason="limit"}).
    #[arg(long, default_value_t = 16384, value_name = "N")]
    pub max_conns: usize,

    /// Most TCP connections one source address may hold on each listener (0: no limit).
    /// Beyond it its new connections are closed at once (reason="per_ip"). Load tests from
    /// one host need 0 or a larger value.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_conns_per_ip: usize,

    /// Most WebRTC sessions (publishers: WHIP, publishStream; viewers: WHEP, playStream) that
    /// may wait for ICE and DTLS at once, all workers together. An offer beyond it is refused:
    /// WHIP/WHEP 503, Flashphoner FAILED "Too many sessions waiting to connect". Each waits at
    /// most 15 s.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_pending_webrtc: usize,

    /// The same per source address (0: no limit).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_pending_webrtc_per_ip: usize,

    /// Most WebRTC viewers (playStream, WHEP) at once, all workers together: each costs
    /// the stream's bitrate in egress. Beyond it: FAILED "Too many viewers" / WHEP 503.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_viewers: usize,

    /// The same per source address (0: no limit; load tests from one host).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_viewers_per_ip: usize,

    /// Close an RTMP connection that neither publishes nor plays for this long (after its
    /// handshake, or after it stopped publishing or playing).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub rtmp_idle_timeout: f64,

    /// An RTMP publisher that sends no media for this long loses its name (players get
    /// the usual grace window) and is disconnected, as a silent WebRTC publisher is.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub publisher_timeout: f64,

    /// Testing only: enables POST /debug/fault/{panic,stall}?worker=N[&secs=S], which
    /// makes worker N panic or stop turning its loop, to check supervision.
    #[arg(long, hide = true)]
    pub debug_faults: bool,

    /// Largest incoming RTMP message; a longer message length ends that connection.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_name = "BYTES")]
    pub max_message_bytes: u32,

    /// Outgoing RTMP chunk size (128..=65536).
    #[arg(long, default_value_t = 4096, value_name = "BYTES")]
    pub chunk_size: usize,

    /// Audio for RTMP players of WebRTC publishers: aac, opus (Enhanced RTMP Opus where the
    /// player supports it, AAC otherwise) or none.
    #[arg(long, value_enum, default_value_t = AudioMode::Aac, value_name = "MODE")]
    pub audio: AudioMode,

    /// Ask WebRTC publishers for a keyframe this often (seconds), and whenever a player joins
    /// while the cached GOP is older than this.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub keyframe_interval: f64,

    /// Do not cache the last GOP: joining players wait for the next keyframe.
    #[arg(long)]
    pub no_gop_cache: bool,

    /// Write coalescing: the longest a player's media may wait to be written. Writes,
    /// not bytes, are most of a relay's CPU per player (README "Performance"), so a
    /// player's pending media goes out in one writev when its oldest unsent message is
    /// MS ms old. Default (flag absent): MS = 20, and everything pending is written at
    /// once whenever the core is idle (under 5% busy), so a lightly loaded server adds
    /// no latency at all. Given explicitly, MS is held to even when idle (steady
    /// batches, lowest CPU); 0 writes every loop turn. Joining players, a player's first
    /// keyframe and control messages are never held; a player's held bytes are written
    /// at once when they reach 64 KiB.
    #[arg(long, value_name = "MS")]
    pub write_batch_ms: Option<u64>,

    /// Enable signed tokens (HMAC-SHA256) with the secret in FILE (at least 16 bytes;
    /// surrounding whitespace ignored). Clients carry a token from `rtcbridge token`: RTMP
    /// `?token=` on the stream name or tcUrl, or a `token` field in the connect object;
    /// Flashphoner `authToken` or `custom.token`; WHIP `Authorization: Bearer`.
    #[arg(long, value_name = "FILE")]
    pub auth_secret: Option<std::path::PathBuf>,

    /// Which actions need a token when --auth-secret is set: publish, play or all.
    #[arg(long, value_enum, default_value_t = AuthMode::All, value_name = "ACTIONS")]
    pub auth: AuthMode,

    /// Protect /api/* with `Authorization: Bearer TOKEN`, TOKEN being FILE's content
    /// (whitespace trimmed). /healthz stays open.
    #[arg(long, value_name = "FILE")]
    pub api_token: Option<std::path::PathBuf>,

    /// Protect /metrics the same way with the token in FILE (open without it).
    #[arg(long, value_name = "FILE")]
    pub metrics_token: Option<std::path::PathBuf>,

    /// Ask an HTTP backend before accepting a connect (RTMP, Flashphoner), a publish or a play:
    /// POST of JSON `{action, protocol, name, app, ip, query, token, custom}` to URL;
    /// 2xx allows, anything else, no answer within --auth-hook-timeout or no
    /// connection denies. Plain http:// only (no TLS): keep the backend on localhost or
    /// a private network. With --auth-secret too, a valid token is enough and the hook
    /// decides the rest.
    #[arg(long, value_name = "URL")]
    pub auth_hook: Option<String>,

    /// Like --auth-hook, in the shape of Flashphoner Web Call Server's REST hooks: POST
    /// to URL/connect, URL/publishStream, URL/playStream with the connection or stream
    /// object as the client sent it; 200 allows, anything else denies. http:// only.
    #[arg(long, value_name = "URL", conflicts_with = "auth_hook")]
    pub auth_hook_wcs: Option<String>,

    /// Seconds to wait for the auth hook's answer before denying.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub auth_hook_timeout: f64,

    /// Browser origin allowed to open signaling WebSockets and to use WHIP from a page
    /// (CORS), e.g. https://app.example.com (repeatable). Unset: any origin, CORS `*`.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origin: Vec<String>,

    /// Push (restream) stream NAME to URL whenever NAME is live (repeatable): URL is the
    /// whole destination, rtmp://[user:pass@]host[:port]/app/KEY or rtmps://...; the last
    /// path segment is the stream key. A push that fails is retried (1 s doubling to
    /// 30 s); it ends when the stream ends, and starts again with the next publish.
    /// Pushes can also be started with POST /api/push and Flashphoner `rtmpUrl`.
    #[arg(long = "push", value_name = "NAME=URL", value_parser = parse_push_rule)]
    pub push: Vec<PushRule>,

    /// PEM file of extra CA certificates trusted for rtmps:// push destinations (a
    /// private CA, or a destination's self-signed certificate), on top of the built-in
    /// public web roots.
    #[arg(long, value_name = "FILE")]
    pub push_ca: Option<std::path::PathBuf>,

    /// Flashphoner `publishStream` with `rtmpUrl` pushes to rtmpUrl/PREFIX+NAME, as Web
    /// Call Server names it; '' pushes under the stream name as is.
    #[arg(long, default_value = "rtmp_", value_name = "PREFIX")]
    pub push_name_prefix: String,

    /// Run as one node of a cluster whose stream directory is in Redis:
    /// redis://[:PASSWORD@]HOST:PORT[/DB]. Names are unique across nodes; a player of a
    /// stream another node owns makes this node pull it once over RTMP. See README "Cluster".
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,

    /// How other nodes reach this one over RTMP (with --cluster). Default: rtmp://IP:PORT
    /// from --rtmp, with the first --public-ip when --rtmp listens on all addresses.
    #[arg(long, value_name = "URL")]
    pub node_url: Option<String>,

    /// Lease of this node's directory entries in Redis (refreshed twice a second): a node
    /// that dies loses its streams to the others at most this long after.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub cluster_lease: f64,
}

/// `--push NAME=URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRule {
    pub name: String,
    pub url: String,
}

/// Parse and check `NAME=URL` (the URL must be a usable destination).
pub fn parse_push_rule(s: &str) -> Result<PushRule, String> {
    let (name, url) = s.split_once('=').ok_or_else(|| "expected NAME=URL, e.g. cam=rtmp://a.rtmp.youtube.com/live2/KEY".to_owned())?;
    if name.is_empty() {
        return Err("empty stream NAME in NAME=URL".into());
    }
    crate::proto::rtmp::client::PushUrl::parse(url).map_err(|e| format!("bad push url: {e}"))?;
    Ok(PushRule { name: name.to_owned(), url: url.to_owned() })
}

/// `rtcbridge token ...`: print a signed token for --auth-secret.
#[derive(Debug, Clone, Parser)]
#[command(name = "rtcbridge token", about = "Print a signed access token for a server started with --auth-secret FILE.")]
pub struct TokenCmd {
    /// The same secret file as the server's --auth-secret.
    #[arg(long, value_name = "FILE")]
    pub secret: std::path::PathBuf,
    /// Allow publishing NAME (a NAME ending in '*' is a prefix: 'team-*').
    #[arg(long, value_name = "NAME", conflicts_with = "play", required_unless_present = "play")]
    pub publish: Option<String>,
    /// Allow playing NAME (a NAME ending in '*' is a prefix).
    #[arg(long, value_name = "NAME")]
    pub play: Option<String>,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_name = "TTL")]
    pub ttl: String,
    /// Only for clients connecting from this address.
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,
}

/// `90`, `90s`, `30m`, `1h`, `7d` → seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86400),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mul)).filter(|&n| n > 0).ok_or_else(|| format!("--ttl {s}: expected a positive number of seconds, or 30m, 1h, 7d"))
}

/// The default coalescing bound (`--write-batch-ms` absent), chosen by measurement
/// (README "Performance").
pub const DEFAULT_WRITE_BATCH_MS: u64 = 20;

impl Config {
    /// A WebRTC viewer of a name nobody publishes waits: only with `--unknown-stream wait`.
    pub fn webrtc_waits_for_unknown(&self) -> bool {
        self.unknown_stream == Some(UnknownStream::Wait)
    }

    /// Check ranges clap cannot express; the message names the flag.
    pub fn validate(&mut self) -> Result<(), String> {
        let tls_listener = match (self.https, self.rtmps) {
            (Some(_), _) => Some("--https"),
            (None, Some(_)) => Some("--rtmps"),
            (None, None) => None,
        };
        match (tls_listener, &self.tls_cert, &self.tls_key) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(flag), _, _) => return Err(format!("{flag} needs both --tls-cert and --tls-key")),
            (None, _, _) => return Err("--tls-cert/--tls-key are used by --https and --rtmps, and neither is set".into()),
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = self.workers.unwrap_or(cores);
        if workers == 0 || workers > 64 {
            return Err(format!("--workers {workers}: must be 1..=64"));
        }
        self.workers = Some(workers);
        if !(128..=65536).contains(&self.chunk_size) {
            return Err(format!("--chunk-size {}: must be 128..=65536", self.chunk_size));
        }
        if !(0.0..=3600.0).contains(&self.unpublish_grace) {
            return Err("--unpublish-grace: must be 0..=3600 seconds".into());
        }
        if !(0.2..=60.0).contains(&self.keyframe_interval) {
            return Err("--keyframe-interval: must be 0.2..=60 seconds".into());
        }
        if !(1.0..=86400.0).contains(&self.rtmp_idle_timeout) {
            return Err("--rtmp-idle-timeout: must be 1..=86400 seconds".into());
        }
        if !(1.0..=3600.0).contains(&self.publisher_timeout) {
            return Err("--publisher-timeout: must be 1..=3600 seconds".into());
        }
        if self.max_pending_webrtc == 0 {
            return Err("--max-pending-webrtc: must be at least 1".into());
        }
        if self.max_conns == 0 {
            return Err("--max-conns: must be at least 1".into());
        }
        if !(0.1..=3600.0).contains(&self.evict_after) {
            return Err("--evict-after: must be 0.1..=3600 seconds".into());
        }
        if let Some(ms) = self.write_batch_ms.filter(|&ms| ms > 1000) {
            return Err(format!("--write-batch-ms {ms}: must be 0..=1000"));
        }
        if self.player_queue_kb < 16 {
            return Err("--player-queue-kb: must be at least 16".into());
        }
        if self.max_message_bytes < 64 * 1024 {
            return Err("--max-message-bytes: must be at least 65536".into());
        }
        if !(1.0..=600.0).contains(&self.cluster_lease) {
            return Err("--cluster-lease: must be 1..=600 seconds".into());
        }
        if self.node_url.is_some() && self.cluster.is_none() {
            return Err("--node-url is used with --cluster".into());
        }
        if let Some(u) = &self.cluster {
            crate::runtime::cluster::RedisUrl::parse(u).map_err(|e| format!("--cluster {u}: {e}"))?;
        }
        if let Some(u) = &self.node_url {
            crate::proto::rtmp::client::PushUrl::parse(&format!("{}/app/x", u.trim_end_matches('/')))
                .map_err(|e| format!("--node-url {u}: {e}"))?;
        }
        if usize::from(self.udp_port) + workers > 65536 {
            return Err("--udp-port: PORT + workers exceeds 65535".into());
        }
        Ok(())
    }

    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or(1)
    }
    /// How other nodes reach this one (`--node-url`, or from `--rtmp`/`--public-ip`).
    pub fn node_url(&self) -> String {
        if let Some(u) = &self.node_url {
            return u.trim_end_matches('/').to_owned();
        }
        let ip = if self.rtmp.ip().is_unspecified() {
            self.public_ip.first().copied().unwrap_or(IpAddr::from([127, 0, 0, 1]))
        } else {
            self.rtmp.ip()
        };
        format!("rtmp://{}", SocketAddr::new(ip, self.rtmp.port()))
    }
    pub fn cluster_lease(&self) -> Duration {
        Duration::from_secs_f64(self.cluster_lease)
    }
    pub fn grace(&self) -> Duration {
        Duration::from_secs_f64(self.unpublish_grace)
    }
    pub fn keyframe_every(&self) -> Duration {
        Duration::from_secs_f64(self.keyframe_interval)
    }
    pub fn rtmp_idle(&self) -> Duration {
        Duration::from_secs_f64(self.rtmp_idle_timeout)
    }
    pub fn publisher_silence(&self) -> Duration {
        Duration::from_secs_f64(self.publisher_timeout)
    }
    pub fn evict(&self) -> Duration {
        Duration::from_secs_f64(self.evict_after)
    }
    /// `--write-batch-ms`: the coalescing bound, `None` when writes are not held.
    pub fn write_batch(&self) -> Option<Duration> {
        let ms = self.write_batch_ms.unwrap_or(DEFAULT_WRITE_BATCH_MS);
        (ms > 0).then(|| Duration::from_millis(ms))
    }
    /// Held media is written early when the core is idle (the default policy); an
    /// explicit `--write-batch-ms` holds to its bound.
    pub fn write_early_when_idle(&self) -> bool {
        self.write_batch_ms.is_none()
    }
    pub fn queue_limit(&self) -> usize {
        self.player_queue_kb * 1024
    }
}
