//! rtmp-load: N RTMP players in one process, one mio loop, against one URL.
//!
//! Each player connects, does the plain handshake, `connect`, `createStream`,
//! `play`, then reads until the end of the run, counting bytes, messages and
//! video/audio frames. It answers the server's Window Acknowledgement Size with
//! Acknowledgement messages and its ping requests with ping responses.
//!
//! Cheap by construction, so that the load costs far less CPU than the server
//! it loads: one 256 KiB read buffer shared by every player, and a header-only
//! chunk tracker ([`track::ChunkTracker`]) that skips media payloads in place
//! (no copy, no allocation per message). Only the `--probes K` extra players
//! reassemble whole messages (the server crate's `ChunkDecoder`) and parse the
//! FLV tags: their H.264 frames are searched for a wall-clock SEI (see
//! [`flv`]) to measure end-to-end latency when a publisher provides one.
//!
//! Join to first keyframe = time from the start of the TCP connect to the
//! arrival of the last byte of the first video key frame (not a sequence
//! header), recorded for every player; probes join after the ramp, one every
//! 200 ms, so their join times are taken under the full load.
//!
//! `--raw`: players only connect and count bytes (for `writev-blaster`).
//!
//! Output: one JSON object on stdout (see `summary`). Diagnostics on stderr.

mod flv;
#[path = "../../common/report.rs"]
mod report;
mod track;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use rtcbridge::proto::rtmp::amf::Value;
use rtcbridge::proto::rtmp::amf0;
use rtcbridge::proto::rtmp::chunk::{ChunkDecoder, ChunkEncoder};
use rtcbridge::proto::rtmp::handshake::HandshakeClient;

use report::{cpu_times, percentiles, round3};
use track::{ChunkTracker, MsgInfo};

/// One read buffer for all players.
const READ_BUF: usize = 256 * 1024;
/// Probes start after the ramp, this far apart.
const PROBE_GAP: Duration = Duration::from_millis(200);
/// A player that has not had NetStream.Play.Start this long after its connect
/// started fails.
const PLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after Play.Start a player without a key frame counts as joining.
const KEYFRAME_WAIT: Duration = Duration::from_secs(5);
/// Timeouts are checked this often.
const HOUSEKEEPING: Duration = Duration::from_millis(200);
/// Detailed stderr lines per error reason.
const ERR_LOG_PER_REASON: usize = 3;
/// Largest message a probe reassembles.
const PROBE_MAX_MESSAGE: u32 = 16 << 20;
/// Buffer length announced after play (ms), as ffmpeg does.
const BUFFER_MS: u32 = 3000;

// RTMP 1.0 §5.4 / §7.1 message types and §7.1.7 user control events.
const MSG_ACK: u8 = 3;
const MSG_USER_CONTROL: u8 = 4;
const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_COMMAND_AMF3: u8 = 17;
const MSG_COMMAND_AMF0: u8 = 20;
const UC_SET_BUFFER_LENGTH: u16 = 3;
const UC_PING_REQUEST: u16 = 6;
const UC_PING_RESPONSE: u16 = 7;
/// Chunk stream ids we send on (as ffmpeg: control 2, commands 3, play 8).
const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_PLAY: u32 = 8;

struct Args {
    url: String,
    players: usize,
    seconds: f64,
    probes: usize,
    ramp_ms: u64,
    raw: bool,
    poll_interval: Duration,
}

const USAGE: &str = "usage: rtmp-load --url rtmp://HOST:PORT/APP/NAME --players N --seconds S \
[--probes K] [--ramp-ms MS] [--poll-interval-ms MS] [--raw]\n\
  --players N   players that count bytes and frames (header-only parsing)\n\
  --probes K    extra players that parse FLV tags (join time, SEI latency); start after the ramp\n\
  --ramp-ms MS  spread the N players' connects evenly over MS milliseconds (default 1000)\n\
  --seconds S   run length from the first connect; then print one JSON summary on stdout\n\
  --poll-interval-ms MS  at most one poll per MS ms (default 0: sleep in epoll_wait): fewer,\n\
                larger reads, and the server never pays for waking a player (as with remote players).\n\
                Not while a player is joining (connect to first key frame): join times stay exact;\n\
                probe latencies are then measured to within MS ms\n\
  --raw         only connect and count bytes (URL may be tcp://HOST:PORT), for writev-blaster";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        players: 1,
        seconds: 10.0,
        probes: 0,
        ramp_ms: 1000,
        raw: false,
        poll_interval: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val("--url")?,
            "--players" => a.players = val("--players")?.parse().map_err(|_| "--players: not a number")?,
            "--seconds" => a.seconds = val("--seconds")?.parse().map_err(|_| "--seconds: not a number")?,
            "--probes" => a.probes = val("--probes")?.parse().map_err(|_| "--probes: not a number")?,
            "--ramp-ms" => a.ramp_ms = val("--ramp-ms")?.parse().map_err(|_| "--ramp-ms: not a number")?,
            "--poll-interval-ms" => {
                let v: u64 = val("--poll-interval-ms")?.parse().map_err(|_| "--poll-interval-ms: not a number")?;
                a.poll_interval = Duration::from_millis(v.min(1000));
            }
            "--raw" => a.raw = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    if !(a.seconds > 0.0 && a.seconds < 1e6) {
        return Err("--seconds: must be > 0".into());
    }
    Ok(a)
}

/// Where to connect and what to play.
struct Target {
    addr: SocketAddr,
    app: String,
    stream: String,
    tc_url: String,
}

fn parse_url(url: &str, raw: bool) -> Result<Target, String> {
    let rest = url
        .strip_prefix("rtmp://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{url}: expected rtmp://HOST[:PORT]/APP/NAME"))?;
    let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hp = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{hostport}:1935")
    };
    let addr = hp
        .to_socket_addrs()
        .map_err(|e| format!("{hp}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hp}: no address"))?;
    let (app, stream) = path.split_once('/').unwrap_or((path, ""));
    if !raw && (app.is_empty() || stream.is_empty()) {
        return Err(format!("{url}: expected rtmp://HOST[:PORT]/APP/NAME"));
    }
    Ok(Target { addr, app: app.into(), stream: stream.into(), tc_url: format!("rtmp://{hostport}/{app}") })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Connecting,
    Handshake,
    Connect,
    CreateStream,
    Play,
    Playing,
    Closed,
}

/// Everything about a player except its socket and its parser.
struct Conn {
    probe: bool,
    phase: Phase,
    start_at: Instant,
    t_start: Option<Instant>,
    t_playing: Option<Instant>,
    t_end: Option<Instant>,
    first_kf_ms: Option<f64>,
    hs: Option<HandshakeClient>,
    enc: ChunkEncoder,
    out: Vec<u8>,
    out_off: usize,
    stream_id: u32,
    /// Server's Window Acknowledgement Size (0: none announced).
    window: u32,
    /// Chunk stream bytes received (after the handshake), for acknowledgements.
    rx: u64,
    last_ack: u64,
    bytes: u64,
    msgs: u64,
    video: u64,
    audio: u64,
    keyframes: u64,
    dropped: bool,
}

/// Extra state of a probe player: full reassembly and FLV parsing.
struct Probe {
    dec: ChunkDecoder,
    inbuf: Vec<u8>,
    len_size: usize,
    scratch: Vec<u8>,
    e2e_ms: Vec<f64>,
}

struct Player {
    sock: Option<TcpStream>,
    track: ChunkTracker,
    probe: Option<Box<Probe>>,
    c: Conn,
}

impl Conn {
    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.enc.encode(CSID_CONTROL, 0, type_id, 0, payload, &mut self.out);
    }

    fn command(&mut self, csid: u32, msid: u32, values: &[Value]) {
        let mut body = Vec::new();
        amf0::encode_all(values, &mut body);
        self.enc.encode(csid, 0, MSG_COMMAND_AMF0, msid, &body, &mut self.out);
    }

    fn send_connect(&mut self, t: &Target) {
        let obj = Value::Object(vec![
            ("app".into(), Value::String(t.app.clone())),
            ("flashVer".into(), Value::String("LNX 9,0,124,2".into())),
            ("tcUrl".into(), Value::String(t.tc_url.clone())),
            ("fpad".into(), Value::Boolean(false)),
            ("capabilities".into(), Value::Number(15.0)),
            ("audioCodecs".into(), Value::Number(4071.0)),
            ("videoCodecs".into(), Value::Number(252.0)),
            ("videoFunction".into(), Value::Number(1.0)),
        ]);
        self.command(CSID_COMMAND, 0, &[Value::String("connect".into()), Value::Number(1.0), obj]);
        self.phase = Phase::Connect;
    }

    /// Send an Acknowledgement each time a window's worth has arrived (§5.4.3).
    fn maybe_ack(&mut self) {
        if self.window > 0 && self.rx - self.last_ack >= u64::from(self.window) {
            self.last_ack = self.rx;
            self.control(MSG_ACK, &(self.rx as u32).to_be_bytes());
        }
    }

    fn on_message(&mut self, t: &Target, m: &MsgInfo, body: &[u8], now: Instant) -> Result<(), String> {
        self.msgs += 1;
        let head = m.head.get(..usize::from(m.head_len)).unwrap_or(&[]);
        match m.type_id {
            track::MSG_VIDEO => {
                let v = flv::classify_video(head);
                self.video += u64::from(v.frame);
                if v.keyframe {
                    self.keyframes += 1;
                    if self.first_kf_ms.is_none() {
                        self.first_kf_ms = self.t_start.map(|s| ms(now - s));
                    }
                }
            }
            track::MSG_AUDIO => self.audio += u64::from(flv::classify_audio(head)),
            MSG_WINDOW_ACK_SIZE => self.window = be32(body).unwrap_or(0),
            MSG_USER_CONTROL if be16(body) == Some(UC_PING_REQUEST) => {
                let mut p = [0u8; 6];
                p[..2].copy_from_slice(&UC_PING_RESPONSE.to_be_bytes());
                if let Some(ts) = body.get(2..6) {
                    p[2..].copy_from_slice(ts);
                }
                self.control(MSG_USER_CONTROL, &p);
            }
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 if m.has_body => {
                let b = if m.type_id == MSG_COMMAND_AMF3 { body.get(1..).unwrap_or(&[]) } else { body };
                self.on_command(t, b, now)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, t: &Target, body: &[u8], now: Instant) -> Result<(), String> {
        let values = amf0::decode_all(body).map_err(|e| format!("command: {e}"))?;
        let name = values.first().and_then(Value::as_str).unwrap_or("");
        let tid = values.get(1).and_then(Value::as_f64).unwrap_or(0.0);
        let info = values.get(3);
        let code = info.and_then(|i| i.get("code")).and_then(Value::as_str).unwrap_or("");
        match name {
            "_result" if self.phase == Phase::Connect && tid == 1.0 => {
                self.command(CSID_COMMAND, 0, &[Value::String("createStream".into()), Value::Number(2.0), Value::Null]);
                self.phase = Phase::CreateStream;
            }
            "_result" if self.phase == Phase::CreateStream && tid == 2.0 => {
                self.stream_id = info.and_then(Value::as_f64).unwrap_or(1.0) as u32;
                let msid = self.stream_id;
                self.command(CSID_PLAY, msid, &[
                    Value::String("play".into()),
                    Value::Number(3.0),
                    Value::Null,
                    Value::String(t.stream.clone()),
                    Value::Number(-2000.0),
                ]);
                let mut p = [0u8; 10];
                p[..2].copy_from_slice(&UC_SET_BUFFER_LENGTH.to_be_bytes());
                p[2..6].copy_from_slice(&msid.to_be_bytes());
                p[6..].copy_from_slice(&BUFFER_MS.to_be_bytes());
                self.control(MSG_USER_CONTROL, &p);
                self.phase = Phase::Play;
            }
            "_error" => return Err(format!("_error in {:?}: {code}", self.phase)),
            "onStatus" => {
                let level = info.and_then(|i| i.get("level")).and_then(Value::as_str).unwrap_or("");
                if level == "error" {
                    return Err(format!("onStatus {code}"));
                }
                if code == "NetStream.Play.Start" && self.phase == Phase::Play {
                    self.phase = Phase::Playing;
                    self.t_playing = Some(now);
                }
            }
            "close" => return Err("server sent close".into()),
            _ => {}
        }
        Ok(())
    }
}

impl Probe {
    /// FLV-level work on a whole video message: codec config, wall-clock SEI.
    fn on_video(&mut self, payload: &[u8]) {
        if let Some(n) = flv::avc_length_size(payload) {
            self.len_size = n;
            return;
        }
        if let Some(nalus) = flv::avc_nalus(payload) {
            if let Some(us) = flv::sei_wallclock_us(nalus, self.len_size, &mut self.scratch) {
                let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i128).unwrap_or(0);
                self.e2e_ms.push((now_us - i128::from(us)) as f64 / 1000.0);
            }
        }
    }
}

impl Player {
    fn new(probe: bool, start_at: Instant) -> Player {
        Player {
            sock: None,
            track: ChunkTracker::new(),
            probe: probe.then(|| {
                Box::new(Probe {
                    dec: ChunkDecoder::new(PROBE_MAX_MESSAGE),
                    inbuf: Vec::new(),
                    len_size: 4,
                    scratch: Vec::new(),
                    e2e_ms: Vec::new(),
                })
            }),
            c: Conn {
                probe,
                phase: Phase::Idle,
                start_at,
                t_start: None,
                t_playing: None,
                t_end: None,
                first_kf_ms: None,
                hs: None,
                enc: ChunkEncoder::new(),
                out: Vec::new(),
                out_off: 0,
                stream_id: 0,
                window: 0,
                rx: 0,
                last_ack: 0,
                bytes: 0,
                msgs: 0,
                video: 0,
                audio: 0,
                keyframes: 0,
                dropped: false,
            },
        }
    }

    /// Bytes read from the socket.
    fn on_bytes(&mut self, t: &Target, raw: bool, data: &[u8], now: Instant) -> Result<(), String> {
        self.c.bytes += data.len() as u64;
        if raw {
            return Ok(());
        }
        let mut data = data;
        if let Some(hs) = self.c.hs.as_mut() {
            let used = hs.handle_input(data, &mut self.c.out).map_err(|e| format!("handshake: {e}"))?;
            if !hs.is_done() {
                return Ok(());
            }
            self.c.hs = None;
            data = data.get(used..).unwrap_or(&[]);
            self.c.send_connect(t);
        }
        self.c.rx += data.len() as u64;
        if let Some(p) = self.probe.as_mut() {
            p.inbuf.extend_from_slice(data);
            let mut pos = 0;
            loop {
                let (n, m) = p.dec.decode(p.inbuf.get(pos..).unwrap_or(&[])).map_err(|e| format!("chunk: {e}"))?;
                if n == 0 {
                    break;
                }
                pos += n;
                let Some(m) = m else { continue };
                match m.type_id {
                    track::MSG_SET_CHUNK_SIZE => {
                        let v = be32(&m.payload).unwrap_or(0) & 0x7fff_ffff;
                        p.dec.set_chunk_size(v).map_err(|e| format!("chunk: {e}"))?;
                    }
                    track::MSG_ABORT => p.dec.abort(be32(&m.payload).unwrap_or(0)),
                    track::MSG_VIDEO => p.on_video(&m.payload),
                    _ => {}
                }
                let mut head = [0u8; 2];
                let hl = m.payload.len().min(2);
                head[..hl].copy_from_slice(&m.payload[..hl]);
                let info = MsgInfo {
                    csid: m.csid,
                    type_id: m.type_id,
                    msid: m.stream_id,
                    timestamp: m.timestamp,
                    len: m.payload.len() as u32,
                    head,
                    head_len: hl as u8,
                    has_body: true,
                };
                self.c.on_message(t, &info, &m.payload, now)?;
            }
            p.inbuf.drain(..pos);
        } else {
            while !data.is_empty() {
                let (n, m) = self.track.feed(data).map_err(|e| format!("chunk: {e}"))?;
                data = data.get(n..).unwrap_or(&[]);
                if let Some(m) = m {
                    self.c.on_message(t, &m, self.track.body(), now)?;
                }
            }
        }
        self.c.maybe_ack();
        Ok(())
    }

    /// Write what is queued; Ok even when the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        let Some(sock) = self.sock.as_mut() else { return Ok(()) };
        let c = &mut self.c;
        while c.out_off < c.out.len() {
            match sock.write(c.out.get(c.out_off..).unwrap_or(&[])) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => c.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if c.out_off == c.out.len() {
            c.out.clear();
            c.out_off = 0;
        }
        Ok(())
    }
}

struct Load {
    poll: Poll,
    players: Vec<Player>,
    target: Target,
    raw: bool,
    buf: Vec<u8>,
    errors: BTreeMap<String, u64>,
}

impl Load {
    fn start(&mut self, i: usize, now: Instant) {
        let raw = self.raw;
        let Some(p) = self.players.get_mut(i) else { return };
        p.c.t_start = Some(now);
        match TcpStream::connect(self.target.addr) {
            Ok(mut sock) => {
                let _ = sock.set_nodelay(true);
                if let Err(e) = self.poll.registry().register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE) {
                    return self.close(i, format!("register: {:?}", e.kind()), now);
                }
                p.sock = Some(sock);
                p.c.phase = Phase::Connecting;
                if !raw {
                    let seed = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    p.c.hs = Some(HandshakeClient::new(seed, 0, &mut p.c.out));
                }
            }
            Err(e) => self.close(i, format!("connect: {:?}", e.kind()), now),
        }
    }

    fn close(&mut self, i: usize, why: String, now: Instant) {
        let Some(p) = self.players.get_mut(i) else { return };
        if p.c.phase == Phase::Closed {
            return;
        }
        if let Some(mut s) = p.sock.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        let key = if p.c.phase == Phase::Playing {
            p.c.dropped = true;
            format!("while playing: {why}")
        } else {
            format!("before play ({:?}): {why}", p.c.phase)
        };
        p.c.phase = Phase::Closed;
        p.c.t_end = Some(now);
        let n = self.errors.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n as usize <= ERR_LOG_PER_REASON {
            eprintln!("rtmp-load: player {i}{}: {key}", if p.c.probe { " (probe)" } else { "" });
        }
    }

    fn on_event(&mut self, i: usize, ev: &mio::event::Event, now: Instant) {
        let raw = self.raw;
        let Some(p) = self.players.get_mut(i) else { return };
        if p.c.phase == Phase::Closed {
            return;
        }
        if p.c.phase == Phase::Connecting {
            let Some(sock) = p.sock.as_ref() else { return };
            match sock.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.close(i, format!("connect: {:?}", e.kind()), now),
            }
            match sock.peer_addr() {
                Ok(_) => {
                    if raw {
                        p.c.phase = Phase::Playing;
                        p.c.t_playing = Some(now);
                    } else {
                        p.c.phase = Phase::Handshake;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.close(i, format!("connect: {:?}", e.kind()), now),
            }
        }
        if ev.is_writable() {
            if let Err(e) = p.flush() {
                return self.close(i, format!("write: {:?}", e.kind()), now);
            }
        }
        if !ev.is_readable() && !ev.is_read_closed() && !ev.is_error() {
            return;
        }
        loop {
            let Some(sock) = p.sock.as_mut() else { return };
            match sock.read(&mut self.buf) {
                Ok(0) => return self.close(i, "closed by server".into(), now),
                Ok(n) => {
                    let data = self.buf.get(..n).unwrap_or(&[]);
                    if let Err(why) = p.on_bytes(&self.target, raw, data, now) {
                        return self.close(i, why, now);
                    }
                    if let Err(e) = p.flush() {
                        return self.close(i, format!("write: {:?}", e.kind()), now);
                    }
                    // A short read emptied the socket: the next arrival raises a new edge.
                    if n < self.buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close(i, format!("read: {:?}", e.kind()), now),
            }
        }
    }

    /// True while some player is between its connect and its first key frame
    /// (for at most KEYFRAME_WAIT after Play.Start): `--poll-interval-ms`
    /// does not sleep then, so that join times stay exact.
    fn anyone_joining(&self, now: Instant) -> bool {
        self.players.iter().any(|p| match p.c.phase {
            Phase::Idle | Phase::Closed => false,
            Phase::Playing => {
                !self.raw
                    && p.c.first_kf_ms.is_none()
                    && p.c.t_playing.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_WAIT)
            }
            _ => true,
        })
    }

    fn housekeeping(&mut self, now: Instant) {
        for i in 0..self.players.len() {
            let c = &self.players[i].c;
            let joining = !matches!(c.phase, Phase::Idle | Phase::Playing | Phase::Closed);
            if joining && c.t_start.is_some_and(|s| now - s > PLAY_TIMEOUT) {
                let why = format!("no NetStream.Play.Start within {} s", PLAY_TIMEOUT.as_secs());
                self.close(i, why, now);
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes([*b.first()?, *b.get(1)?, *b.get(2)?, *b.get(3)?]))
}


fn min_avg_max(v: &[f64]) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let avg = v.iter().sum::<f64>() / v.len() as f64;
    json!({"min": min, "avg": round3(avg), "max": max})
}



fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rtmp-load: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let target = match parse_url(&args.url, args.raw) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rtmp-load: {e}");
            std::process::exit(2);
        }
    };
    match run(&args, target) {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            eprintln!("rtmp-load: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args, target: Target) -> io::Result<serde_json::Value> {
    let probes = if args.raw { 0 } else { args.probes };
    let total = args.players + probes;
    let t0 = Instant::now();
    let ramp = Duration::from_millis(args.ramp_ms);
    let end = t0 + Duration::from_secs_f64(args.seconds);
    let mut players = Vec::with_capacity(total);
    for i in 0..total {
        let probe = i >= args.players;
        let start_at = if probe {
            t0 + ramp + PROBE_GAP * (i - args.players) as u32
        } else if args.players > 0 {
            t0 + ramp.mul_f64(i as f64 / args.players as f64)
        } else {
            t0
        };
        players.push(Player::new(probe, start_at));
    }
    let cpu0 = cpu_times();
    let mut load = Load {
        poll: Poll::new()?,
        players,
        target,
        raw: args.raw,
        buf: vec![0u8; READ_BUF],
        errors: BTreeMap::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut next = 0;
    let mut next_house = t0 + HOUSEKEEPING;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while next < total && load.players[next].c.start_at <= now {
            load.start(next, now);
            next += 1;
        }
        if now >= next_house {
            load.housekeeping(now);
            next_house = now + HOUSEKEEPING;
        }
        let mut wake = end.min(next_house);
        if let Some(p) = load.players.get(next) {
            wake = wake.min(p.c.start_at);
        }
        match load.poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        for ev in events.iter() {
            load.on_event(ev.token().0, ev, now);
        }
        if !args.poll_interval.is_zero() && !load.anyone_joining(now) {
            // Let data pile up in the socket buffers instead of waking per send.
            let mut until = (now + args.poll_interval).min(end).min(next_house);
            if let Some(p) = load.players.get(next) {
                until = until.min(p.c.start_at);
            }
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
    }
    let cpu1 = cpu_times();
    let end = Instant::now();
    Ok(summary(args, &mut load, end, t0, cpu0, cpu1))
}

fn summary(args: &Args, load: &mut Load, end: Instant, t0: Instant, cpu0: (f64, f64), cpu1: (f64, f64)) -> serde_json::Value {
    // Players still joining or never started at the end count as failed.
    for i in 0..load.players.len() {
        let c = &load.players[i].c;
        match c.phase {
            Phase::Idle => {
                *load.errors.entry("never started (ramp longer than the run)".into()).or_insert(0) += 1;
            }
            Phase::Playing | Phase::Closed => {}
            _ => load.close(i, "run ended".into(), end),
        }
    }
    let played: Vec<&Player> = load.players.iter().filter(|p| p.c.t_playing.is_some()).collect();
    let connected = played.len();
    let failed = load.players.len() - connected;
    let dropped = played.iter().filter(|p| p.c.dropped).count();
    let player_seconds: f64 = played
        .iter()
        .map(|p| (p.c.t_end.unwrap_or(end).saturating_duration_since(p.c.t_playing.unwrap_or(end))).as_secs_f64())
        .sum();
    let col = |f: &dyn Fn(&Conn) -> f64| played.iter().map(|p| f(&p.c)).collect::<Vec<f64>>();
    let bytes = col(&|c| c.bytes as f64);
    let joins_all: Vec<f64> = played.iter().filter_map(|p| p.c.first_kf_ms).collect();
    let joins_probe: Vec<f64> = played.iter().filter(|p| p.c.probe).filter_map(|p| p.c.first_kf_ms).collect();
    let e2e: Vec<f64> = played.iter().filter_map(|p| p.probe.as_ref()).flat_map(|p| p.e2e_ms.iter().copied()).collect();
    let no_kf = played.iter().filter(|p| p.c.first_kf_ms.is_none()).count();
    let cpu_user = cpu1.0 - cpu0.0;
    let cpu_sys = cpu1.1 - cpu0.1;
    let cpu = cpu_user + cpu_sys;
    json!({
        "url": args.url,
        "raw": args.raw,
        "players": args.players,
        "probes": if args.raw { 0 } else { args.probes },
        "seconds": round3((end - t0).as_secs_f64()),
        "ramp_ms": args.ramp_ms,
        "poll_interval_ms": args.poll_interval.as_millis() as u64,
        "players_connected": connected,
        "players_failed": failed,
        "players_dropped": dropped,
        "errors": load.errors,
        "bytes_total": bytes.iter().sum::<f64>() as u64,
        "bytes_per_player": min_avg_max(&bytes),
        "messages_per_player": min_avg_max(&col(&|c| c.msgs as f64)),
        "video_frames_per_player": min_avg_max(&col(&|c| c.video as f64)),
        "audio_frames_per_player": min_avg_max(&col(&|c| c.audio as f64)),
        "keyframes_per_player": min_avg_max(&col(&|c| c.keyframes as f64)),
        "players_without_keyframe": no_kf,
        "join_to_keyframe_ms": {
            "probes": percentiles(&joins_probe, &[50, 95, 99]),
            "all": percentiles(&joins_all, &[50, 95, 99]),
        },
        "e2e_latency_ms": percentiles(&e2e, &[50, 95, 99]),
        "player_seconds": round3(player_seconds),
        "cpu_user_s": round3(cpu_user),
        "cpu_sys_s": round3(cpu_sys),
        "cpu_s": round3(cpu),
        "cpu_ms_per_player_second": if player_seconds > 0.0 { round3(cpu * 1000.0 / player_seconds) } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcbridge::buf::SendQueue;
    use rtcbridge::proto::flv::MediaKind;
    use rtcbridge::relay::Frame;
    use rtcbridge::proto::rtmp::chunk::RawMessage;
    use rtcbridge::proto::rtmp::session::{RtmpEvent, RtmpSession};

    fn target() -> Target {
        Target {
            addr: "127.0.0.1:1935".parse().unwrap(),
            app: "live".into(),
            stream: "cam".into(),
            tc_url: "rtmp://127.0.0.1:1935/live".into(),
        }
    }

    fn media() -> Vec<(MediaKind, u32, Vec<u8>)> {
        vec![
            (MediaKind::Video, 0, vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff]),
            (MediaKind::Audio, 0, vec![0xaf, 0, 0x11, 0x90]),
            (MediaKind::Video, 0, [vec![0x17, 1, 0, 0, 0], vec![0, 0, 0, 2, 0x65, 0x88]].concat()),
            (MediaKind::Audio, 20, vec![0xaf, 1, 5, 6, 7]),
            (MediaKind::Video, 33, [vec![0x27, 1, 0, 0, 0], vec![7u8; 9000]].concat()),
        ]
    }

    /// A player against the server's own sans-IO session, bytes cut small.
    #[test]
    fn player_joins_and_counts_against_the_server_session() {
        for probe in [false, true] {
            let t0 = Instant::now();
            let t = target();
            let mut p = Player::new(probe, t0);
            p.c.t_start = Some(t0);
            p.c.phase = Phase::Handshake;
            p.c.hs = Some(HandshakeClient::new(1, 0, &mut p.c.out));
            let mut s = RtmpSession::new(7, 0, 1 << 20, 4096);
            let mut q = SendQueue::new();
            for _ in 0..20 {
                let out = std::mem::take(&mut p.c.out);
                assert_eq!(s.handle_input(&out, &mut q).unwrap(), out.len());
                while let Some(ev) = s.poll_event() {
                    if let RtmpEvent::PlayRequested { msid, name } = ev {
                        assert_eq!(name, "cam");
                        s.play_start(msid, &name, &mut q);
                        for (kind, ts, payload) in media() {
                            let f = Frame::new(kind, ts, &payload);
                            s.queue_media(msid, ts, kind, &f.rtmp(4096), &mut q);
                        }
                    }
                }
                let mut bytes = Vec::new();
                q.write_to(&mut bytes).unwrap();
                if bytes.is_empty() && out.is_empty() {
                    break;
                }
                for piece in bytes.chunks(77) {
                    p.on_bytes(&t, false, piece, t0 + Duration::from_millis(5)).unwrap();
                }
            }
            assert_eq!(p.c.phase, Phase::Playing, "probe {probe}");
            assert_eq!((p.c.video, p.c.keyframes, p.c.audio), (2, 1, 1), "probe {probe}");
            assert_eq!(p.c.first_kf_ms, Some(5.0));
            assert_eq!(p.c.window, rtcbridge::proto::rtmp::session::WINDOW_ACK_SIZE);
            if let Some(pr) = &p.probe {
                assert_eq!(pr.len_size, 4);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Vec<RawMessage> {
        let mut d = ChunkDecoder::new(1 << 20);
        let mut pos = 0;
        let mut v = Vec::new();
        while let Ok((n, m)) = d.decode(&bytes[pos..]) {
            if n == 0 {
                break;
            }
            pos += n;
            v.extend(m);
        }
        v
    }

    #[test]
    fn answers_pings_and_acknowledges_each_window() {
        for probe in [false, true] {
            let t = target();
            let mut p = Player::new(probe, Instant::now());
            p.c.phase = Phase::Playing;
            let mut enc = ChunkEncoder::new();
            let mut wire = Vec::new();
            enc.encode(2, 0, MSG_WINDOW_ACK_SIZE, 0, &1000u32.to_be_bytes(), &mut wire);
            enc.encode(2, 0, MSG_USER_CONTROL, 0, &[0, 6, 0, 0, 1, 2], &mut wire);
            enc.encode(6, 40, 9, 1, &[0x27; 1500], &mut wire);
            p.on_bytes(&t, false, &wire, Instant::now()).unwrap();
            let sent = decode(&p.c.out);
            assert_eq!(sent.len(), 2);
            assert_eq!((sent[0].type_id, &sent[0].payload[..]), (MSG_USER_CONTROL, &[0u8, 7, 0, 0, 1, 2][..]));
            assert_eq!(sent[1].type_id, MSG_ACK);
            assert_eq!(sent[1].payload, (wire.len() as u32).to_be_bytes());
        }
    }
}
