//! Helpers for the cluster tests (tests/cluster.rs), included with
//! `#[path = "common/cluster.rs"] mod cluster;` next to `mod common;`:
//! - `Redis`: Debian's `redis-server` on a free loopback port (`--save '' --appendonly no`),
//!   killed by pid, started again on the same port, and `redis-cli` against it;
//! - `start_node`: an `rtcbridge` node joined to it (`--cluster redis://127.0.0.1:P
//!   --workers 2`, its own RTMP/HTTP/UDP ports through `Server::start`), `GET /api/cluster`
//!   and killing a node with SIGKILL;
//! - `ProbePlayer`: an ffprobe player that decodes a window of a stream and lists every
//!   packet (with its key flag) and every decoded frame, so one player gives frame counts,
//!   decode errors, monotonic pts and whether its first video packet was a keyframe;
//! - what the hand-written RTMP client (`common::RtmpClient`) received: sequence headers,
//!   timestamps per track, gaps between video frames.
#![allow(dead_code)]

use crate::common::*;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// `redis-server` on 127.0.0.1:`port`, ended (SIGKILL) when dropped.
pub struct Redis {
    pub port: u16,
    guard: Option<ChildGuard>,
    pub log_path: PathBuf,
    /// When it last answered PING after a start.
    pub ready_at: Instant,
}

impl Redis {
    /// On a free port; waits until it answers PING.
    pub fn start() -> Redis {
        let port = free_port();
        let mut r = Redis { port, guard: None, log_path: scratch_path("redis", "log"), ready_at: Instant::now() };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        assert!(self.guard.is_none(), "redis-server already running");
        let log = File::options().create(true).append(true).open(&self.log_path).expect("redis log");
        let err = log.try_clone().expect("clone redis log");
        let child = Command::new(tool("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no", "--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (tools/test-all installs it): {e}"));
        self.guard = Some(ChildGuard::new("redis-server", child));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(g) = self.guard.as_mut() {
                if !g.is_running() {
                    panic!("redis-server exited at startup on port {}:\n{}", self.port, read_file_lossy(&self.log_path));
                }
            }
            if self.cli(&["PING"]).is_ok_and(|o| o.trim() == "PONG") {
                self.ready_at = Instant::now();
                return;
            }
            if Instant::now() >= deadline {
                panic!("redis-server on port {} did not answer PING within 10 s:\n{}", self.port, read_file_lossy(&self.log_path));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL and reap: the port refuses from now on. Returns the instant before the kill.
    pub fn kill(&mut self) -> Instant {
        let t = Instant::now();
        if let Some(mut g) = self.guard.take() {
            let _ = g.child.kill();
            let _ = g.child.wait();
        }
        t
    }

    /// Start again on the same port (empty: `--save ''`); returns when it answers PING.
    pub fn restart(&mut self) -> Instant {
        self.spawn();
        self.ready_at
    }

    /// `redis-cli -p PORT ARGS...`: stdout, or the error.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(tool("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run redis-cli: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || stdout.starts_with("Could not connect") {
            return Err(format!("redis-cli {args:?}: {} {stdout} {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        Ok(stdout)
    }

    /// `KEYS pattern`, sorted (empty when Redis does not answer).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .cli(&["--no-raw", "KEYS", pattern])
            .map(|o| {
                o.lines()
                    .filter_map(|l| {
                        // --no-raw: `1) "rtcbridge:node:..."`; an empty reply is `(empty array)`.
                        let q = l.find('"')?;
                        let r = l.rfind('"')?;
                        (r > q).then(|| l[q + 1..r].to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// An rtcbridge node of the cluster in `redis`: `--cluster URL --workers 2` plus `extra`,
/// on free ports (node URL = its `--rtmp`, the default).
pub fn start_node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args: Vec<&str> = vec!["--cluster", &url, "--workers", "2"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// GET /api/cluster as JSON (panics unless 200).
pub fn cluster_json(s: &Server) -> Value {
    let (code, body) = s.get("/api/cluster");
    assert_eq!(code, 200, "GET /api/cluster answered {code}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/api/cluster is not JSON ({e}): {body}"))
}

/// GET /api/cluster without panicking (the node may be busy or dead).
pub fn try_cluster_json(s: &Server) -> Option<Value> {
    let (code, body) = http_get_timeout(s.http_port, "/api/cluster", Duration::from_secs(2)).ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// This node's id (`node.id` of its /api/cluster).
pub fn node_id(s: &Server) -> String {
    cluster_json(s)["node"]["id"].as_str().unwrap_or_else(|| panic!("/api/cluster without node.id")).to_string()
}

/// `rtmp://127.0.0.1:PORT`, the node URL a node with `--rtmp 127.0.0.1:PORT` announces.
pub fn node_url(s: &Server) -> String {
    format!("rtmp://127.0.0.1:{}", s.rtmp_port)
}

/// Ids of the nodes a /api/cluster answer lists as alive.
pub fn alive_nodes(v: &Value) -> Vec<String> {
    v["nodes"]
        .as_array()
        .map(|a| a.iter().filter(|n| n["alive"] == true).filter_map(|n| n["id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The directory entry of `name` in a /api/cluster answer: (node id, url).
pub fn directory_entry(v: &Value, name: &str) -> Option<(String, String)> {
    v["directory"].as_array()?.iter().find(|e| e["name"] == name).map(|e| {
        (e["node"].as_str().unwrap_or("").to_string(), e["url"].as_str().unwrap_or("").to_string())
    })
}

/// Waits until every node in `nodes` lists exactly `n` alive nodes.
pub fn wait_alive(nodes: &[&Server], n: usize, timeout: Duration) {
    wait_for(timeout, &format!("every node to see {n} live nodes in /api/cluster"), || {
        nodes.iter().all(|s| try_cluster_json(s).is_some_and(|v| alive_nodes(&v).len() == n))
    });
}

/// Waits until `s`'s directory names `owner_id` for `name`.
pub fn wait_directory(s: &Server, name: &str, owner_id: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let v = try_cluster_json(s);
        if v.as_ref().and_then(|v| directory_entry(v, name)).is_some_and(|(id, _)| id == owner_id) {
            return;
        }
        if Instant::now() >= deadline {
            panic!("node on rtmp port {}: the directory does not name node {owner_id} for {name} within {timeout:?}: {v:?}", s.rtmp_port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL the node and reap it (its `Server` then counts as stopped). Returns the
/// instant just before the signal.
pub fn kill_node(s: &mut Server) -> Instant {
    let pid = s.pid();
    let t = Instant::now();
    signal(pid, "KILL");
    wait_for(Duration::from_secs(5), "the killed node to exit", || s.try_exit_status().is_some());
    t
}

/// The `source` of `name` in the node's /api/streams.
pub fn stream_source(s: &Server, name: &str) -> Option<String> {
    s.stream(name).and_then(|v| v["source"].as_str().map(String::from))
}

// ---------------------------------------------------------------------------
// ffprobe player
// ---------------------------------------------------------------------------

/// `ffprobe -v error -read_intervals %+SECS -show_entries packet=...:frame=... URL`: plays
/// and decodes SECS seconds (of stream time) and lists every packet and decoded frame.
pub struct ProbePlayer {
    pub label: String,
    pub url: String,
    pub secs: f64,
    pub started: Instant,
    guard: ChildGuard,
    out_path: PathBuf,
    err_path: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbedPacket {
    pub video: bool,
    pub pts: f64,
    pub key: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbedFrame {
    pub video: bool,
    pub pts: f64,
    pub key: bool,
    pub duration: Option<f64>,
}

#[derive(Debug)]
pub struct ProbeResult {
    pub label: String,
    pub packets: Vec<ProbedPacket>,
    pub frames: Vec<ProbedFrame>,
    /// Non-empty stderr lines of `-v error`: every one is an error.
    pub errors: Vec<String>,
    pub status: Option<ExitStatus>,
    pub wall: Duration,
}

impl ProbePlayer {
    pub fn start(label: &str, url: &str, secs: f64) -> ProbePlayer {
        let out_path = scratch_path("probeplayer", "txt");
        let err_path = scratch_path("probeplayer", "err");
        let out = File::create(&out_path).expect("ffprobe out");
        let err = File::create(&err_path).expect("ffprobe err");
        let started = Instant::now();
        let child = Command::new(tool("ffprobe"))
            .args(["-hide_banner", "-v", "error", "-rw_timeout", "5000000"])
            .args(["-read_intervals", &format!("%+{secs}")])
            .args(["-show_entries", "packet=codec_type,pts_time,flags:frame=media_type,key_frame,pts_time,pkt_duration_time,duration_time"])
            .args(["-of", "compact", url])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ffprobe: {e}"));
        ProbePlayer { label: label.to_string(), url: url.to_string(), secs, started, guard: ChildGuard::new(label, child), out_path, err_path }
    }

    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Waits (at most `timeout` from now) for ffprobe to end its window; parses its output.
    pub fn finish(mut self, timeout: Duration) -> ProbeResult {
        let status = wait_child(&mut self.guard.child, timeout);
        if status.is_none() {
            end_child(&mut self.guard.child, "KILL", Duration::from_secs(1));
        }
        let text = read_file_lossy(&self.out_path);
        let mut packets = Vec::new();
        let mut frames = Vec::new();
        for line in text.lines() {
            let mut parts = line.split('|');
            let section = parts.next().unwrap_or("");
            let kv: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            let get = |k: &str| kv.iter().find(|(kk, _)| *kk == k).map(|(_, v)| *v);
            let pts = get("pts_time").and_then(|v| v.parse::<f64>().ok());
            match section {
                "packet" => {
                    if let Some(pts) = pts {
                        packets.push(ProbedPacket { video: get("codec_type") == Some("video"), pts, key: get("flags").is_some_and(|f| f.starts_with('K')) });
                    }
                }
                "frame" => {
                    if let Some(pts) = pts {
                        frames.push(ProbedFrame {
                            video: get("media_type") == Some("video"),
                            pts,
                            key: get("key_frame") == Some("1"),
                            duration: get("duration_time").or(get("pkt_duration_time")).and_then(|v| v.parse().ok()),
                        });
                    }
                }
                _ => {}
            }
        }
        let errors = read_file_lossy(&self.err_path).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        let r = ProbeResult { label: self.label.clone(), packets, frames, errors, status, wall: self.started.elapsed() };
        if status.is_none() {
            panic!(
                "{}: ffprobe playing {} for {} s still running after {timeout:?} more (stalled stream?): {}",
                self.label,
                self.url,
                self.secs,
                r.summary()
            );
        }
        r
    }
}

impl ProbeResult {
    pub fn video_frames(&self) -> usize {
        self.frames.iter().filter(|f| f.video).count()
    }
    pub fn audio_frames(&self) -> usize {
        self.frames.iter().filter(|f| !f.video).count()
    }
    /// Nominal AAC frames per second (1024 samples a frame): 48 kHz or 44.1 kHz, told apart by
    /// the decoded frames' median duration (FLV's millisecond time base gives 21 or 23 ms).
    pub fn audio_rate(&self) -> Option<f64> {
        let mut d: Vec<f64> = self.frames.iter().filter(|f| !f.video).filter_map(|f| f.duration).filter(|d| *d > 0.0).collect();
        d.sort_by(|a, b| a.total_cmp(b));
        let m = *d.get(d.len() / 2)?;
        Some(if m < 0.0222 { 48000.0 / 1024.0 } else { 44100.0 / 1024.0 })
    }
    pub fn first_video_packet(&self) -> Option<ProbedPacket> {
        self.packets.iter().find(|p| p.video).copied()
    }
    pub fn summary(&self) -> String {
        format!(
            "{}: {} video / {} audio frames decoded, {} packets, first video packet {:?}, {} errors {:?}, exit {:?}, {:.1} s wall",
            self.label,
            self.video_frames(),
            self.audio_frames(),
            self.packets.len(),
            self.first_video_packet(),
            self.errors.len(),
            self.errors.iter().take(5).collect::<Vec<_>>(),
            self.status,
            self.wall.as_secs_f64()
        )
    }

    /// Exit 0, zero decode errors, at least `min_video`/`min_audio` decoded frames, the first
    /// video packet and the first decoded video frame keyframes, pts strictly increasing
    /// per media type.
    pub fn assert_healthy(&self, min_video: usize, min_audio: usize) {
        let l = &self.label;
        let s = self.summary();
        assert!(self.status.is_some_and(|st| st.success()), "{l}: ffprobe did not exit 0: {s}");
        assert!(self.errors.is_empty(), "{l}: decode errors:\n{}", self.errors.join("\n"));
        assert!(self.video_frames() >= min_video, "{l}: {} video frames decoded, want >= {min_video}: {s}", self.video_frames());
        assert!(self.audio_frames() >= min_audio, "{l}: {} audio frames decoded, want >= {min_audio}: {s}", self.audio_frames());
        let first = self.first_video_packet().unwrap_or_else(|| panic!("{l}: no video packet: {s}"));
        assert!(first.key, "{l}: the first video packet is not a keyframe: {s}");
        let first_frame = self.frames.iter().find(|f| f.video).unwrap_or_else(|| panic!("{l}: no decoded video frame: {s}"));
        assert!(first_frame.key, "{l}: the first decoded video frame is not a keyframe: {s}");
        for video in [true, false] {
            let pts: Vec<f64> = self.frames.iter().filter(|f| f.video == video).map(|f| f.pts).collect();
            if let Some(i) = pts.windows(2).position(|w| w[1] <= w[0]) {
                panic!("{l}: {} pts not increasing at frame {}: {} then {}", if video { "video" } else { "audio" }, i + 1, pts[i], pts[i + 1]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// What the hand-written RTMP client received
// ---------------------------------------------------------------------------

/// An AAC sequence header (AudioSpecificConfig): sound format 10, AACPacketType 0.
pub fn is_aac_seq_header(r: &Rec) -> bool {
    matches!(&r.event, Event::Media { type_id: MSG_AUDIO, head, len, .. } if *len >= 2 && head[0] >> 4 == 10 && head[1] == 0)
}

/// An AVC sequence header.
pub fn is_avc_seq_header(r: &Rec) -> bool {
    matches!(r.video_kind(), Some((_, true)))
}

/// A coded video frame (not a sequence header): Some(is keyframe).
pub fn coded_video(r: &Rec) -> Option<bool> {
    match r.video_kind() {
        Some((key, false)) => Some(key),
        _ => None,
    }
}

pub fn media_ts(r: &Rec) -> Option<(u8, u32)> {
    match &r.event {
        Event::Media { type_id, timestamp, .. } => Some((*type_id, *timestamp)),
        _ => None,
    }
}

/// The first place where a track's timestamps step back: (type, index, previous, this).
pub fn timestamps_step_back(evs: &[Rec]) -> Option<(u8, usize, u32, u32)> {
    let mut last: [Option<u32>; 2] = [None, None];
    for (i, e) in evs.iter().enumerate() {
        let Some((t, ts)) = media_ts(e) else { continue };
        let slot = usize::from(t == MSG_VIDEO);
        if let Some(prev) = last[slot] {
            if ts < prev {
                return Some((t, i, prev, ts));
            }
        }
        last[slot] = Some(ts);
    }
    None
}

/// Coded video frames received at or after index `from` and after `after`.
pub fn video_frames_after(c: &RtmpClient, from: usize, after: Instant) -> usize {
    c.events().iter().skip(from).filter(|e| coded_video(e).is_some() && e.at > after).count()
}

/// Longest time without a coded video frame within [from, to] (the window's edges count
/// as frames, so a stream that stopped shows up as a gap up to `to`).
pub fn max_video_gap(evs: &[Rec], from: Instant, to: Instant) -> (Duration, Instant) {
    let mut prev = from;
    let mut worst = (Duration::ZERO, from);
    for e in evs.iter().filter(|e| coded_video(e).is_some() && e.at >= from && e.at <= to) {
        let g = e.at.saturating_duration_since(prev);
        if g > worst.0 {
            worst = (g, prev);
        }
        prev = e.at;
    }
    let g = to.saturating_duration_since(prev);
    if g > worst.0 {
        worst = (g, prev);
    }
    worst
}

/// The `description` of the onStatus `code` the client received, if any.
pub fn status_description(c: &RtmpClient, code: &str) -> Option<String> {
    c.events().iter().find_map(|e| match &e.event {
        Event::Status { code: c2, info } if c2 == code => Some(info.get("description").and_then(Amf::as_str).unwrap_or("").to_string()),
        _ => None,
    })
}
