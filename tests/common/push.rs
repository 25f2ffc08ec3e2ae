//! Helpers for the RTMP push tests (tests/push_api.rs, tests/push_reconnect.rs), included
//! by them with `#[path = "common/push.rs"] mod push;` next to `mod common;`:
//! - the push HTTP API (`POST/GET/DELETE /api/push`) with JSON bodies;
//! - `ffmpeg -listen 1` as a recording destination (exactly what one push connection
//!   delivered, `-c copy -copyinkf -copyts` to FLV) and the analysis of such a recording
//!   with ffprobe (packets, flags, timestamps) and ffmpeg (decode errors, frame counts);
//! - fake RTMP destinations built on the crate's own server session (`RtmpSession`):
//!   one that refuses `connect` with `_error`, one that closes during the handshake, one
//!   that accepts the publish and then never reads again, one that records every message;
//! - a player of our stream that notes when each frame arrives (gaps, rate);
//! - nginx-rtmp on a port of the test's choosing, so it can be killed and started again
//!   on the same port;
//! - a self-signed certificate in a directory of its own.
#![allow(dead_code)]

use crate::common::*;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------

/// One HTTP/1.1 request with an optional JSON body; returns (status, body).
/// `Connection: close`, deadline 5 s.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    let ctype = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{ctype}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = Vec::new();
    match s.read_to_end(&mut resp) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !resp.is_empty() => {}
        Err(e) => return Err(e),
    }
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no end of headers in {text:?}")))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line in {head:?}")))?;
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        rest.get(..len).unwrap_or(rest).to_owned()
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut b: &str) -> String {
    let mut out = String::new();
    while let Some(i) = b.find("\r\n") {
        let size = usize::from_str_radix(b[..i].split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        b = &b[i + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.push_str(&b[..size]);
        b = b.get(size + 2..).unwrap_or("");
    }
    out
}

/// A request on the server's HTTP port; the body parsed as JSON (panics naming the
/// request when the body is not JSON).
pub fn api(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, text) =
        http(server.http_port, method, path, body).unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path} answered {status} with a body that is not JSON ({e}): {text:?}"));
    (status, v)
}

/// `POST /api/push` with `{"stream": stream, "url": url}`.
pub fn post_push(server: &Server, stream: &str, url: &str) -> (u16, Value) {
    let body = serde_json::json!({ "stream": stream, "url": url }).to_string();
    api(server, "POST", "/api/push", Some(&body))
}

/// `POST /api/push` that must answer 201; returns the push id after checking the
/// contract's shape of the answer.
pub fn start_push(server: &Server, stream: &str, url: &str) -> String {
    let (status, v) = post_push(server, stream, url);
    assert_eq!(status, 201, "POST /api/push {stream} -> {url}: answered {status} {v}");
    let id = v["id"].as_str().unwrap_or_else(|| panic!("201 without an id: {v}")).to_owned();
    assert!(is_push_id(&id), "push id {id:?} is not P-<32 hex>: {v}");
    assert_eq!(v["stream"].as_str(), Some(stream), "201 names the stream: {v}");
    assert_eq!(v["state"].as_str(), Some("connecting"), "a new push is connecting: {v}");
    id
}

pub fn is_push_id(id: &str) -> bool {
    id.strip_prefix("P-")
        .map(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or(false)
}

/// The `pushes` array of `GET /api/push`.
pub fn list_pushes(server: &Server) -> Vec<Value> {
    let (status, v) = api(server, "GET", "/api/push", None);
    assert_eq!(status, 200, "GET /api/push answered {status}: {v}");
    v["pushes"].as_array().cloned().unwrap_or_else(|| panic!("GET /api/push has no \"pushes\" array: {v}"))
}

/// `GET /api/push/ID`: 200 and the push object.
pub fn get_push(server: &Server, id: &str) -> Value {
    let (status, v) = api(server, "GET", &format!("/api/push/{id}"), None);
    assert_eq!(status, 200, "GET /api/push/{id} answered {status}: {v}");
    assert_eq!(v["id"].as_str(), Some(id), "GET /api/push/{id} returned another push: {v}");
    v
}

/// `DELETE /api/push/ID`; returns (status, body).
pub fn delete_push(server: &Server, id: &str) -> (u16, Value) {
    api(server, "DELETE", &format!("/api/push/{id}"), None)
}

pub fn state(p: &Value) -> &str {
    p["state"].as_str().unwrap_or("")
}
pub fn num(p: &Value, key: &str) -> u64 {
    p[key].as_u64().unwrap_or_else(|| p[key].as_f64().map(|f| f as u64).unwrap_or(0))
}
pub fn last_error(p: &Value) -> String {
    p["last_error"].as_str().unwrap_or("").to_owned()
}

/// Polls `GET /api/push/ID` every 100 ms until `pred` holds; returns that object.
/// Panics after `timeout` with the last object and the server's log tail.
pub fn wait_push(server: &Server, id: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let p = get_push(server, id);
        let summary = format!("{} reconnects={} err={:?}", state(&p), num(&p, "reconnects"), last_error(&p));
        if seen.last() != Some(&summary) {
            seen.push(summary);
        }
        if pred(&p) {
            return p;
        }
        if Instant::now() >= deadline {
            panic!(
                "push {id}: {what}: not within {timeout:?}; last {p}\nstates seen: {seen:?}\nserver log tail:\n{}",
                tail(&server.log(), 30)
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Whether something listens on TCP 127.0.0.1:`port` (or any address), read from
/// /proc/net/tcp and /proc/net/tcp6 so that no connection is made: an `ffmpeg -listen 1`
/// would take a probing connection for its one publisher.
pub fn tcp_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
            })
    })
}

/// Waits until `port` is listening; returns the instant it was first seen.
pub fn wait_listening(port: u16, timeout: Duration, what: &str) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if tcp_listening(port) {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            panic!("{what}: nothing listening on 127.0.0.1:{port} after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// ffmpeg -listen 1 as a recording destination
// ---------------------------------------------------------------------------

/// `ffmpeg -listen 1 -i rtmp://127.0.0.1:PORT/live/KEY -map 0 -c copy -copyinkf -copyts
/// -f flv OUT`: takes one publisher and records exactly what it sent (initial non-key
/// frames included, timestamps as sent), then exits when the publisher goes.
pub struct ListenDest {
    pub guard: ChildGuard,
    pub port: u16,
    pub out: PathBuf,
    pub err: PathBuf,
    pub listening_at: Instant,
}

impl ListenDest {
    pub fn start(port: u16, key: &str) -> ListenDest {
        let out = scratch_path("listen-dest", "flv");
        let err = scratch_path("listen-dest", "err");
        let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
        let mut cmd = Command::new(tool("ffmpeg"));
        cmd.args(["-hide_banner", "-nostdin", "-v", "warning", "-listen", "1", "-i", &url])
            .args(["-map", "0", "-c", "copy", "-copyinkf", "-copyts", "-f", "flv", "-y"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&err).expect("create dest log")));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start ffmpeg -listen: {e}"));
        let guard = ChildGuard::new("ffmpeg -listen destination", child);
        let listening_at = wait_listening(port, Duration::from_secs(10), "ffmpeg -listen destination");
        ListenDest { guard, port, out, err, listening_at }
    }

    pub fn url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.port)
    }

    pub fn log(&self) -> String {
        read_file_lossy(&self.err)
    }

    /// SIGKILL: the destination crashes (the kernel resets/closes its connection).
    pub fn kill(&mut self) {
        let _ = self.guard.child.kill();
        let _ = self.guard.child.wait();
    }

    /// Waits for ffmpeg to exit by itself (the publisher went away); panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_child(&mut self.guard.child, timeout).unwrap_or_else(|| {
            panic!(
                "ffmpeg -listen on {} still running {timeout:?} after its publisher should have gone; log:\n{}",
                self.port,
                self.log()
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Analysis of a recorded FLV
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Pkt {
    pub kind: String,
    pub dts: f64,
    pub pts: f64,
    pub key: bool,
}

#[derive(Clone, Debug)]
pub struct ProbedStream {
    pub codec_type: String,
    pub codec_name: String,
    pub extradata_size: u64,
}

/// What ffprobe and a decoding ffmpeg make of a recording.
pub struct Recording {
    pub path: PathBuf,
    pub streams: Vec<ProbedStream>,
    pub packets: Vec<Pkt>,
    pub probe_errors: String,
    /// `ffmpeg -v error -i FILE -map 0:v? -map 0:a? -f framemd5`: decoded frames and
    /// stderr lines.
    pub decoded: FrameMd5,
    pub decode_errors: Vec<String>,
    pub decode_ok: bool,
}

fn kv(line: &str) -> std::collections::HashMap<String, String> {
    line.split('|')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Probes and decodes `path` (decoding only when `decode`).
pub fn analyze(path: &Path, decode: bool) -> Recording {
    let out = Command::new(tool("ffprobe"))
        .args(["-v", "error", "-show_entries", "stream=codec_type,codec_name,extradata_size", "-of", "compact=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe -show_streams");
    let streams = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(kv)
        .filter(|m| m.contains_key("codec_type"))
        .map(|m| ProbedStream {
            codec_type: m.get("codec_type").cloned().unwrap_or_default(),
            codec_name: m.get("codec_name").cloned().unwrap_or_default(),
            extradata_size: m.get("extradata_size").and_then(|v| v.parse().ok()).unwrap_or(0),
        })
        .collect();
    let mut probe_errors = String::from_utf8_lossy(&out.stderr).into_owned();
    let out = Command::new(tool("ffprobe"))
        .args(["-v", "error", "-show_entries", "packet=codec_type,pts_time,dts_time,flags", "-of", "compact=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe -show_packets");
    probe_errors.push_str(&String::from_utf8_lossy(&out.stderr));
    let t = |m: &std::collections::HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let packets = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(kv)
        .filter(|m| m.contains_key("codec_type"))
        .map(|m| Pkt {
            kind: m.get("codec_type").cloned().unwrap_or_default(),
            dts: t(&m, "dts_time"),
            pts: t(&m, "pts_time"),
            key: m.get("flags").map(|f| f.starts_with('K')).unwrap_or(false),
        })
        .collect();
    let (decoded, decode_errors, decode_ok) = if decode {
        let md5 = scratch_path("decode", "framemd5");
        let out = Command::new(tool("ffmpeg"))
            .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
            .arg(path)
            .args(["-map", "0:v?", "-map", "0:a?", "-f", "framemd5", "-y"])
            .arg(&md5)
            .stdin(Stdio::null())
            .output()
            .expect("run ffmpeg to decode a recording");
        let errs: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        (FrameMd5::parse(&read_file_lossy(&md5)), errs, out.status.success())
    } else {
        (FrameMd5::default(), Vec::new(), true)
    };
    Recording { path: path.to_owned(), streams, packets, probe_errors, decoded, decode_errors, decode_ok }
}

impl Recording {
    pub fn packets_of(&self, kind: &str) -> Vec<&Pkt> {
        self.packets.iter().filter(|p| p.kind == kind).collect()
    }

    fn av_dts(&self) -> impl Iterator<Item = f64> + '_ {
        self.packets.iter().filter(|p| p.kind == "video" || p.kind == "audio").map(|p| p.dts).filter(|d| d.is_finite())
    }

    /// Smallest audio/video dts.
    pub fn first_dts(&self) -> Option<f64> {
        self.av_dts().reduce(f64::min)
    }

    /// Largest audio/video dts.
    pub fn last_dts(&self) -> Option<f64> {
        self.av_dts().reduce(f64::max)
    }

    pub fn decoded_count(&self, media_type: &str) -> usize {
        self.decoded.by_type(media_type).map(|s| s.frames.len()).unwrap_or(0)
    }

    fn describe(&self) -> String {
        let first: Vec<String> = self
            .packets
            .iter()
            .take(8)
            .map(|p| format!("{} dts {:.3} {}", p.kind, p.dts, if p.key { "K" } else { "_" }))
            .collect();
        format!(
            "{}: streams {:?}; {} packets ({} video, {} audio), first {:?}; probe stderr {:?}",
            self.path.display(),
            self.streams,
            self.packets.len(),
            self.packets_of("video").len(),
            self.packets_of("audio").len(),
            first,
            self.probe_errors.trim()
        )
    }

    /// One H.264 video stream and one AAC audio stream, each with its sequence header
    /// (extradata: avcC / AudioSpecificConfig).
    pub fn assert_h264_aac(&self, label: &str) {
        let v = self.streams.iter().find(|s| s.codec_type == "video");
        let a = self.streams.iter().find(|s| s.codec_type == "audio");
        assert!(
            matches!(v, Some(s) if s.codec_name == "h264" && s.extradata_size > 0),
            "{label}: no H.264 video stream with a sequence header: {}",
            self.describe()
        );
        assert!(
            matches!(a, Some(s) if s.codec_name == "aac" && s.extradata_size > 0),
            "{label}: no AAC audio stream with a sequence header: {}",
            self.describe()
        );
    }

    /// Nothing but the one video and the one audio stream: no stream ffmpeg made up out
    /// of other messages (its FLV demuxer turns a data message it does not take for
    /// header metadata, e.g. onMetaData with a timestamp other than 0, into a
    /// "Subtitle: text" or data stream of its own).
    pub fn assert_only_audio_video(&self, label: &str) {
        let extra: Vec<String> = self
            .streams
            .iter()
            .filter(|s| s.codec_type != "video" && s.codec_type != "audio")
            .map(|s| format!("{} ({})", s.codec_type, s.codec_name))
            .collect();
        let extra_packets: Vec<String> = self
            .packets
            .iter()
            .filter(|p| p.kind != "video" && p.kind != "audio")
            .take(5)
            .map(|p| format!("{} at dts {:.3} s", p.kind, p.dts))
            .collect();
        assert!(
            extra.is_empty() && self.streams.len() == 2,
            "{label}: streams other than one video and one audio: {extra:?}, packets {extra_packets:?}; {}",
            self.describe()
        );
    }

    /// The first video packet is a keyframe.
    pub fn assert_starts_on_keyframe(&self, label: &str) {
        let first = self.packets.iter().find(|p| p.kind == "video");
        assert!(
            matches!(first, Some(p) if p.key),
            "{label}: the first video packet is not a keyframe: {}",
            self.describe()
        );
    }

    /// Per stream, dts strictly increasing packet after packet.
    pub fn assert_monotonic(&self, label: &str) {
        for kind in ["video", "audio"] {
            let p = self.packets_of(kind);
            for (i, w) in p.windows(2).enumerate() {
                assert!(
                    w[1].dts > w[0].dts,
                    "{label}: {kind} dts not increasing at packet {}: {:.3} then {:.3}; {}",
                    i + 1,
                    w[0].dts,
                    w[1].dts,
                    self.describe()
                );
            }
        }
    }

    /// Decodes with zero errors (stderr of `ffmpeg -v error` empty, exit 0), at least
    /// `min_video` video and `min_audio` audio frames, decoded pts strictly increasing.
    pub fn assert_decodes_clean(&self, label: &str, min_video: usize, min_audio: usize) {
        assert!(
            self.decode_errors.is_empty() && self.decode_ok,
            "{label}: decoding {} gave errors (exit ok: {}):\n{}",
            self.path.display(),
            self.decode_ok,
            self.decode_errors.join("\n")
        );
        let (v, a) = (self.decoded_count("video"), self.decoded_count("audio"));
        assert!(v >= min_video, "{label}: {v} video frames decoded, want >= {min_video}; {}", self.describe());
        assert!(a >= min_audio, "{label}: {a} audio frames decoded, want >= {min_audio}; {}", self.describe());
        for s in self.decoded.streams.values() {
            if let Some(i) = s.first_non_monotonic() {
                panic!(
                    "{label}: decoded {} pts not increasing at frame {i}: {:?} then {:?}",
                    s.media_type,
                    s.frames[i - 1],
                    s.frames[i]
                );
            }
        }
    }
}

/// Lines of a destination ffmpeg's log that complain about timestamps
/// ("Non-monotonous DTS", "non monotonically increasing dts").
pub fn timestamp_complaints(log: &str) -> Vec<String> {
    log.lines().filter(|l| l.to_ascii_lowercase().contains("monoton")).map(String::from).collect()
}

// ---------------------------------------------------------------------------
// A player of our stream that notes when each frame arrives
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Arrivals {
    parser: FrameMd5,
    /// (arrival, pts in seconds) of each decoded video frame.
    video: Vec<(Instant, f64)>,
    audio: usize,
    eof: bool,
}

/// `ffmpeg -v error -i URL -map 0 -f framemd5 -flush_packets 1 -`, its output read line
/// by line as frames come: when each video frame arrived, how many audio frames.
pub struct ArrivalPlayer {
    pub label: String,
    pub started: Instant,
    guard: ChildGuard,
    err_path: PathBuf,
    state: Arc<Mutex<Arrivals>>,
    reader: Option<JoinHandle<()>>,
}

impl ArrivalPlayer {
    pub fn start(label: &str, url: &str) -> ArrivalPlayer {
        let err_path = scratch_path("arrival-player", "err");
        let mut cmd = Command::new(tool("ffmpeg"));
        cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-rw_timeout", "5000000", "-i", url])
            .args(["-map", "0", "-f", "framemd5", "-flush_packets", "1", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(&err_path).expect("create player log")));
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start ffmpeg player: {e}"));
        let stdout = child.stdout.take().expect("player stdout");
        let state = Arc::new(Mutex::new(Arrivals::default()));
        let st = state.clone();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let now = Instant::now();
                        let mut s = st.lock().unwrap();
                        if let Some((idx, f)) = s.parser.line(&line) {
                            let sl = &s.parser.streams[&idx];
                            if sl.media_type == "video" {
                                let t = sl.seconds(f.pts);
                                s.video.push((now, t));
                            } else if sl.media_type == "audio" {
                                s.audio += 1;
                            }
                        }
                    }
                }
            }
            st.lock().unwrap().eof = true;
        });
        ArrivalPlayer { label: label.to_owned(), started, guard: ChildGuard::new(label, child), err_path, state, reader: Some(reader) }
    }

    pub fn video_frames(&self) -> usize {
        self.state.lock().unwrap().video.len()
    }

    pub fn audio_frames(&self) -> usize {
        self.state.lock().unwrap().audio
    }

    pub fn ended(&self) -> bool {
        self.state.lock().unwrap().eof
    }

    /// Waits for `n` video frames (the player is up).
    pub fn wait_frames(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.video_frames() < n {
            if Instant::now() >= deadline {
                panic!("{}: {} video frames after {timeout:?} (want {n}); stderr:\n{}", self.label, self.video_frames(), self.errors().join("\n"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Video frames that arrived in [from, to].
    pub fn frames_between(&self, from: Instant, to: Instant) -> usize {
        self.state.lock().unwrap().video.iter().filter(|(t, _)| *t >= from && *t <= to).count()
    }

    /// The longest time in [from, to] without a video frame arriving (wall clock), and
    /// the largest step in video pts between consecutive frames that arrived in it.
    pub fn max_gaps(&self, from: Instant, to: Instant) -> (Duration, f64) {
        let s = self.state.lock().unwrap();
        let v = &s.video;
        let mut wall = Duration::ZERO;
        let mut media: f64 = 0.0;
        for w in v.windows(2) {
            let ((a, pa), (b, pb)) = (w[0], w[1]);
            // Every interval between two arrivals that overlaps [from, to] counts whole.
            if b >= from && a <= to {
                wall = wall.max(b.duration_since(a));
                media = media.max(pb - pa);
            }
        }
        match v.iter().rev().find(|(t, _)| *t <= to) {
            // Nothing arrived since the last frame before `to`: that gap runs to `to`.
            Some(&(last, _)) if v.last().map(|l| l.0) == Some(last) => {
                wall = wall.max(to.saturating_duration_since(last.max(from)));
            }
            Some(_) => {}
            None => wall = wall.max(to.saturating_duration_since(from)),
        }
        (wall, media)
    }

    /// Non-empty stderr lines (`-v error`: each one an error).
    pub fn errors(&self) -> Vec<String> {
        read_file_lossy(&self.err_path).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    }

    /// The first video frame whose pts does not increase, if any.
    pub fn non_monotonic(&self) -> Option<(f64, f64)> {
        let s = self.state.lock().unwrap();
        s.video.windows(2).find(|w| w[1].1 <= w[0].1).map(|w| (w[0].1, w[1].1))
    }

    pub fn stop(mut self) -> Vec<String> {
        end_child(&mut self.guard.child, "INT", Duration::from_secs(3));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.errors()
    }
}

// ---------------------------------------------------------------------------
// Fake RTMP destinations on the crate's own server session
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub enum FakeMode {
    /// Answer `connect` with `_error` NetConnection.Connect.Rejected and this description,
    /// then close.
    Reject(String),
    /// Read C0+C1, then close without answering.
    CloseInHandshake,
    /// Accept connect and publish, then never read the socket again (held open).
    Stall,
    /// Accept connect and publish, record every message.
    Record,
}

/// One message a recording fake received.
#[derive(Clone, Debug)]
pub struct Got {
    pub at: Instant,
    /// 8 audio, 9 video, 18 data.
    pub type_id: u8,
    pub ts: u32,
    pub len: usize,
    pub head: [u8; 2],
    /// For data messages: the first AMF string (onMetaData).
    pub data_name: String,
}

impl Got {
    pub fn is_video(&self) -> bool {
        self.type_id == 9
    }
    pub fn is_audio(&self) -> bool {
        self.type_id == 8
    }
    /// AVC sequence header (AVCPacketType 0).
    pub fn is_avc_header(&self) -> bool {
        self.is_video() && self.head[0] & 0x0f == 7 && self.head[1] == 0
    }
    pub fn is_keyframe(&self) -> bool {
        self.is_video() && self.head[0] >> 4 == 1
    }
    /// AAC sequence header (AACPacketType 0).
    pub fn is_aac_header(&self) -> bool {
        self.is_audio() && self.head[0] >> 4 == 10 && self.head[1] == 0
    }
}

/// What one connection to a fake did.
#[derive(Clone, Debug, Default)]
pub struct FakeConn {
    pub peer: String,
    pub app: Option<String>,
    pub tc_url: Option<String>,
    pub publish_name: Option<String>,
    pub published: bool,
    pub messages: Vec<Got>,
    pub closed: Option<String>,
}

#[derive(Default)]
struct FakeShared {
    conns: Vec<FakeConn>,
}

/// A fake RTMP server on 127.0.0.1 (a free port), one thread per connection.
pub struct FakeDest {
    pub port: u16,
    pub mode: FakeMode,
    stop: Arc<AtomicBool>,
    close_now: Arc<AtomicUsize>,
    shared: Arc<Mutex<FakeShared>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDest {
    pub fn start(mode: FakeMode) -> FakeDest {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a fake destination");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let close_now = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Mutex::new(FakeShared::default()));
        let (st, sh, m, cn) = (stop.clone(), shared.clone(), mode.clone(), close_now.clone());
        let thread = thread::spawn(move || {
            let mut workers: Vec<JoinHandle<()>> = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, peer)) => {
                        let idx = {
                            let mut g = sh.lock().unwrap();
                            g.conns.push(FakeConn { peer: peer.to_string(), ..Default::default() });
                            g.conns.len() - 1
                        };
                        let (st2, sh2, m2, cn2) = (st.clone(), sh.clone(), m.clone(), cn.clone());
                        workers.push(thread::spawn(move || {
                            let why = fake_conn(sock, idx, &m2, &st2, &sh2, &cn2);
                            sh2.lock().unwrap().conns[idx].closed = Some(why);
                        }));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        FakeDest { port, mode, stop, close_now, shared, thread: Some(thread) }
    }

    pub fn url(&self, app: &str, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{key}", self.port)
    }

    pub fn conns(&self) -> Vec<FakeConn> {
        self.shared.lock().unwrap().conns.clone()
    }

    pub fn conn_count(&self) -> usize {
        self.shared.lock().unwrap().conns.len()
    }

    /// Connections that got as far as an accepted publish.
    pub fn published_count(&self) -> usize {
        self.shared.lock().unwrap().conns.iter().filter(|c| c.published).count()
    }

    /// The recording fake closes the connection(s) open now (the destination goes away).
    pub fn close_open_connections(&self) {
        let n = self.conn_count();
        self.close_now.store(n, Ordering::SeqCst);
    }

    pub fn describe(&self) -> String {
        self.conns()
            .iter()
            .map(|c| {
                format!(
                    "[{} app {:?} tcUrl {:?} publish {:?} published {} {} msgs closed {:?}]",
                    c.peer,
                    c.app,
                    c.tc_url,
                    c.publish_name,
                    c.published,
                    c.messages.len(),
                    c.closed
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for FakeDest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flush(q: &mut rtcbridge::buf::SendQueue, s: &mut TcpStream) -> io::Result<()> {
    while !q.is_empty() {
        q.write_to(s)?;
    }
    Ok(())
}

/// One connection of a fake destination; returns why it ended.
fn fake_conn(
    mut sock: TcpStream,
    idx: usize,
    mode: &FakeMode,
    stop: &AtomicBool,
    shared: &Mutex<FakeShared>,
    close_now: &AtomicUsize,
) -> String {
    use rtcbridge::buf::SendQueue;
    use rtcbridge::proto::flv::MediaKind;
    use rtcbridge::proto::rtmp::session::{RtmpEvent, RtmpSession};

    let _ = sock.set_nonblocking(false);
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = vec![0u8; 64 * 1024];

    if *mode == FakeMode::CloseInHandshake {
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while got < 1537 && Instant::now() < deadline {
            match sock.read(&mut buf[..1537 - got]) {
                Ok(0) => return format!("peer closed after {got} handshake bytes"),
                Ok(n) => got += n,
                Err(_) => {}
            }
        }
        return format!("closed by the fake after {got} handshake bytes");
    }

    let seed = 0x5eed_0000_u64 + idx as u64;
    let mut sess = RtmpSession::new(seed, 0, 16 << 20, 4096);
    let mut q = SendQueue::new();
    let mut input: Vec<u8> = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return "test ended".into();
        }
        if close_now.load(Ordering::SeqCst) > idx {
            return "closed by the fake (destination went away)".into();
        }
        // Consume what we have, answer events, until no progress.
        loop {
            let n = match sess.handle_input(&input, &mut q) {
                Ok(n) => n,
                Err(e) => {
                    let _ = flush(&mut q, &mut sock);
                    return format!("session error: {e}");
                }
            };
            input.drain(..n);
            let mut events = 0;
            while let Some(ev) = sess.poll_event() {
                events += 1;
                match ev {
                    RtmpEvent::ConnectRequested { app } => {
                        {
                            let (obj, _) = sess.connect_object();
                            let tc = obj.get("tcUrl").and_then(|v| v.as_str()).map(str::to_owned);
                            let mut g = shared.lock().unwrap();
                            g.conns[idx].app = Some(app);
                            g.conns[idx].tc_url = tc;
                        }
                        if let FakeMode::Reject(desc) = mode {
                            sess.connect_reject(desc, &mut q);
                            let _ = flush(&mut q, &mut sock);
                            thread::sleep(Duration::from_millis(200));
                            return "rejected connect".into();
                        }
                        sess.connect_accept(&mut q);
                    }
                    RtmpEvent::PublishRequested { msid, name, .. } => {
                        sess.publish_ok(msid, &name, &mut q);
                        let mut g = shared.lock().unwrap();
                        g.conns[idx].publish_name = Some(name);
                        g.conns[idx].published = true;
                    }
                    RtmpEvent::PlayRequested { msid, name, .. } => sess.play_not_found(msid, &name, &mut q),
                    RtmpEvent::Media { kind, ts, payload, .. } => {
                        let type_id = match kind {
                            MediaKind::Audio => 8,
                            MediaKind::Video => 9,
                            MediaKind::Data => 18,
                        };
                        let data_name = if type_id == 18 {
                            amf0_decode_all(&payload).first().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                        } else {
                            String::new()
                        };
                        let got = Got {
                            at: Instant::now(),
                            type_id,
                            ts,
                            len: payload.len(),
                            head: [payload.first().copied().unwrap_or(0), payload.get(1).copied().unwrap_or(0)],
                            data_name,
                        };
                        shared.lock().unwrap().conns[idx].messages.push(got);
                    }
                    _ => {}
                }
            }
            if let Err(e) = flush(&mut q, &mut sock) {
                return format!("write error: {e}");
            }
            if n == 0 && events == 0 {
                break;
            }
        }
        if *mode == FakeMode::Stall && shared.lock().unwrap().conns[idx].published {
            // Never read again; hold the socket open until the test ends.
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
            return "stalled until the test ended".into();
        }
        match sock.read(&mut buf) {
            Ok(0) => return "peer closed".into(),
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
            Err(e) => return format!("read error: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// nginx-rtmp on a chosen port (restartable)
// ---------------------------------------------------------------------------

/// nginx with the RTMP module, `application live { live on; wait_key on; wait_video on; }` (players
/// start at a keyframe, audio with it), on 127.0.0.1:`port`
/// (the same port after a restart). `kill` is SIGKILL (a crash).
pub struct NginxAt {
    guard: Option<ChildGuard>,
    pub port: u16,
    pub dir: PathBuf,
}

impl NginxAt {
    pub fn start(port: u16) -> NginxAt {
        require_nginx_rtmp_module();
        let dir = scratch_path("nginx-push", "d");
        fs::create_dir_all(dir.join("logs")).expect("nginx dir");
        let d = dir.display();
        let conf = format!(
            "load_module {NGINX_RTMP_MODULE};\n\
             daemon off;\nmaster_process off;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    application live {{ live on; wait_key on; wait_video on; }}\n  }}\n}}\n"
        );
        fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let mut n = NginxAt { guard: None, port, dir };
        n.launch();
        n
    }

    /// Starts nginx (again); returns when it listens.
    pub fn launch(&mut self) -> Instant {
        assert!(self.guard.is_none(), "nginx already running");
        let mut cmd = Command::new(tool("nginx"));
        cmd.arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::OpenOptions::new().create(true).append(true).open(self.dir.join("stderr.log")).expect("nginx stderr"),
            ));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start nginx: {e}"));
        let mut guard = ChildGuard::new("nginx", child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let at = loop {
            if !guard.is_running() {
                panic!("nginx exited at startup:\n{}\n{}", read_file_lossy(&self.dir.join("stderr.log")), self.error_log());
            }
            if tcp_listening(self.port) {
                break Instant::now();
            }
            if Instant::now() >= deadline {
                panic!("nginx not listening on {} after 10 s:\n{}", self.port, self.error_log());
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.guard = Some(guard);
        at
    }

    /// SIGKILL (a crash): its connections are closed by the kernel.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{}", self.port, name)
    }

    pub fn error_log(&self) -> String {
        read_file_lossy(&self.dir.join("error.log"))
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// A self-signed certificate (SAN localhost and 127.0.0.1) and its key, in a directory
/// of their own: (cert.pem, key.pem).
pub fn tls_pair() -> (PathBuf, PathBuf) {
    let dir = scratch_path("tls", "d");
    fs::create_dir_all(&dir).expect("tls dir");
    self_signed_pem(&dir)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
