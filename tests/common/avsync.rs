//! A/V sync measurement with ffmpeg: a flash + beep clip for Chromium's fake
//! devices, and flash-to-beep offsets measured in any recording of it.
//!
//! Self-contained (std only, the ffmpeg path is passed in), so it works both as
//! `common::avsync` and included with `#[path = "common/avsync.rs"]`.
//!
//! The clip is long enough never to loop during a test: Chromium's y4m fake
//! camera delivers the first frame twice each time it wraps around (checked
//! with Chromium 156: a 60-frame loop plays as 61 frames), so a looping clip
//! moves its video 33 ms later against the exactly looping WAV on every pass,
//! which is 1 s of drift over a minute that has nothing to do with the server.
//! Without a wrap, a local MediaRecorder recording keeps the same offset to the
//! millisecond over a minute.
//!
//! [`RtpTap`] is a UDP relay for the browser's side of a WebRTC session that
//! keeps the clear-text RTP headers: what Chromium actually sent, to tell its
//! own timing steps from the server's.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A flash (one white frame in a dark 30 fps video) and a beep (40 ms of
/// 1 kHz) at the same instant, at every whole second of the clip except the
/// seconds where [`marker_at`] is false. Those gaps make the pattern repeat only
/// every 77 s, so an A/V offset of whole seconds cannot pass for a small one:
/// it leaves flashes without a beep (see [`unpaired`]).
pub struct Clip {
    pub y4m: PathBuf,
    pub wav: PathBuf,
    pub secs: u32,
}

impl Clip {
    /// Writes `secs` seconds of 160x120 y4m (about 0.86 MB a second) and
    /// 48 kHz mono 16-bit WAV into `dir` with ffmpeg.
    pub fn generate(ffmpeg: &Path, dir: &Path, secs: u32) -> Clip {
        let y4m = dir.join("avsync-clip.y4m");
        let wav = dir.join("avsync-clip.wav");
        // ffmpeg expressions of marker_at(second) for frame n / sample n.
        let on = |per: u32| format!("not(eq(mod(floor(n/{per})\\,7)\\,3))*not(eq(mod(floor(n/{per})\\,11)\\,5))");
        let video = format!(
            "color=c=0x101010:s=160x120:r=30:d={secs},format=yuv420p,\
             drawbox=c=white:t=fill:enable='eq(mod(n\\,30)\\,0)*{}'",
            on(30)
        );
        let audio = format!(
            "aevalsrc='if(lt(mod(n\\,48000)\\,1920)*{}\\,0.5*sin(2*PI*1000*n/48000)\\,0)':s=48000:d={secs}",
            on(48000)
        );
        run(ffmpeg, &["-f", "lavfi", "-i", &video, "-f", "yuv4mpegpipe"], &y4m);
        run(ffmpeg, &["-f", "lavfi", "-i", &audio, "-ac", "1", "-c:a", "pcm_s16le"], &wav);
        let frames = secs as u64 * 30;
        let want = 160 * 120 * 3 / 2 * frames;
        let got = fs::metadata(&y4m).map(|m| m.len()).unwrap_or(0);
        assert!(got > want, "{} has {got} bytes, want > {want}", y4m.display());
        Clip { y4m, wav, secs }
    }
}

impl Drop for Clip {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.y4m);
        let _ = fs::remove_file(&self.wav);
    }
}

/// Whether second `s` of the clip has a flash and a beep.
pub fn marker_at(s: u64) -> bool {
    s % 7 != 3 && s % 11 != 5
}

fn run(ffmpeg: &Path, args: &[&str], out: &Path) {
    let o = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", ffmpeg.display()));
    assert!(o.status.success(), "ffmpeg {args:?} {} failed: {}", out.display(), String::from_utf8_lossy(&o.stderr));
}

/// What ffmpeg saw in a recording: onsets in seconds of the file's own timeline.
#[derive(Debug, Default)]
pub struct Onsets {
    /// Every decoded video frame's time.
    pub video_times: Vec<f64>,
    pub flashes: Vec<f64>,
    pub beeps: Vec<f64>,
    pub video_frames: usize,
    pub audio_windows: usize,
    /// Luma of the dark frames and of the brightest one.
    pub luma: (f64, f64),
    /// Level (dB) of the quiet windows and of the loudest one.
    pub level: (f64, f64),
}

/// One flash and the beep nearest to it.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub flash: f64,
    /// beep − flash, milliseconds.
    pub offset_ms: f64,
}

/// Audio analysis window: 96 samples = 2 ms at 48 kHz.
pub const WINDOW: u32 = 96;

/// Decodes the first video and audio stream of `media` once, and finds flash
/// onsets (per-frame mean luma crossing halfway from dark to white) and beep
/// onsets (first 2 ms window within 10 dB of the beep's own peak).
pub fn measure(ffmpeg: &Path, media: &Path) -> Result<Onsets, String> {
    let vtxt = media.with_extension("luma.txt");
    let atxt = media.with_extension("level.txt");
    for p in [&vtxt, &atxt] {
        let s = p.to_string_lossy();
        if s.contains([':', '\'', '\\', ',', ';', '[', ']', ' ']) {
            return Err(format!("path {s} would need filtergraph escaping"));
        }
    }
    let graph = format!(
        "[0:v:0]signalstats,metadata=print:key=lavfi.signalstats.YAVG:file={}[vo];\
         [0:a:0]aformat=sample_fmts=s16:sample_rates=48000:channel_layouts=mono,asetnsamples=n={WINDOW},\
         astats=metadata=1:reset=1,ametadata=print:key=lavfi.astats.Overall.RMS_level:file={}[ao]",
        vtxt.display(),
        atxt.display()
    );
    let o = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(media)
        .args(["-filter_complex", &graph, "-map", "[vo]", "-map", "[ao]", "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e}"))?;
    if !o.status.success() {
        return Err(format!("ffmpeg analysis of {} failed: {}", media.display(), String::from_utf8_lossy(&o.stderr)));
    }
    let luma = parse_metadata(&fs::read_to_string(&vtxt).map_err(|e| format!("{}: {e}", vtxt.display()))?);
    let level = parse_metadata(&fs::read_to_string(&atxt).map_err(|e| format!("{}: {e}", atxt.display()))?);
    let (flashes, lum) = flash_onsets(&luma);
    let (beeps, lev) = beep_onsets(&level);
    Ok(Onsets { video_times: luma.iter().map(|f| f.0).collect(), flashes, beeps, video_frames: luma.len(), audio_windows: level.len(), luma: lum, level: lev })
}

/// (pts_time, value) from `metadata=print` / `ametadata=print` output.
pub fn parse_metadata(text: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut t: Option<f64> = None;
    for line in text.lines() {
        if line.starts_with("frame:") {
            t = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("pts_time:"))
                .and_then(|v| v.parse().ok());
        } else if let (Some(tt), Some((_, v))) = (t, line.split_once('=')) {
            let v = v.trim();
            let x = if v.ends_with("inf") && v.starts_with('-') { -200.0 } else { v.parse().unwrap_or(f64::NAN) };
            if x.is_finite() {
                out.push((tt, x));
            }
            t = None;
        }
    }
    out
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p).round() as usize]
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Frames whose luma crosses halfway between the dark level and the brightest frame.
pub fn flash_onsets(frames: &[(f64, f64)]) -> (Vec<f64>, (f64, f64)) {
    let ys: Vec<f64> = frames.iter().map(|f| f.1).collect();
    let dark = percentile(&ys, 0.2);
    let bright = ys.iter().cloned().fold(f64::NAN, f64::max);
    // NaN (no frames) counts as no contrast.
    if (bright - dark).is_nan() || bright - dark <= 40.0 {
        return (Vec::new(), (dark, bright));
    }
    let thr = (dark + bright) / 2.0;
    let mut out = Vec::new();
    for w in frames.windows(2) {
        if w[0].1 <= thr && w[1].1 > thr {
            out.push(w[1].0);
        }
    }
    (out, (dark, bright))
}

/// Beeps: runs of windows above a gate (between the quiet floor and the loudest
/// window); each beep's onset is its first window within 10 dB of its own peak.
pub fn beep_onsets(windows: &[(f64, f64)]) -> (Vec<f64>, (f64, f64)) {
    let ls: Vec<f64> = windows.iter().map(|w| w.1).collect();
    let floor = percentile(&ls, 0.5);
    let peak = ls.iter().cloned().fold(f64::NAN, f64::max);
    // NaN (no windows) counts as no beep.
    if (peak - floor).is_nan() || peak - floor <= 20.0 {
        return (Vec::new(), (floor, peak));
    }
    let gate = (peak - 30.0).max(floor + 10.0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < windows.len() {
        if windows[i].1 <= gate {
            i += 1;
            continue;
        }
        // A run above the gate, bridging dips shorter than 20 ms.
        let start = i;
        let mut end = i;
        let mut j = i;
        while j < windows.len() && windows[j].0 - windows[end].0 < 0.020 {
            if windows[j].1 > gate {
                end = j;
            }
            j += 1;
        }
        let run = &windows[start..=end];
        let top = run.iter().map(|w| w.1).fold(f64::NAN, f64::max);
        if let Some(w) = run.iter().find(|w| w.1 >= top - 10.0) {
            out.push(w.0);
        }
        i = end + 1;
    }
    (out, (floor, peak))
}

/// Each flash with the beep nearest to it (within half the 1 s period).
pub fn pair(o: &Onsets) -> Vec<Pair> {
    o.flashes
        .iter()
        .filter_map(|&f| {
            let b = o.beeps.iter().cloned().min_by(|a, b| (a - f).abs().total_cmp(&(b - f).abs()))?;
            ((b - f).abs() < 0.5).then_some(Pair { flash: f, offset_ms: (b - f) * 1000.0 })
        })
        .collect()
}

/// Flashes with no beep within half a second, and beeps with no flash.
/// Besides a cut at either end of a recording or a dropped flash frame, these
/// come from audio and video that are whole seconds apart.
pub fn unpaired(o: &Onsets) -> (Vec<f64>, Vec<f64>) {
    let lonely = |xs: &[f64], ys: &[f64]| -> Vec<f64> {
        xs.iter().cloned().filter(|x| !ys.iter().any(|y| (y - x).abs() < 0.5)).collect()
    };
    (lonely(&o.flashes, &o.beeps), lonely(&o.beeps, &o.flashes))
}

/// Median offset of the pairs whose flash lies in [from, to) seconds.
pub fn median_in(pairs: &[Pair], from: f64, to: f64) -> Option<(f64, usize)> {
    let v: Vec<f64> = pairs.iter().filter(|p| p.flash >= from && p.flash < to).map(|p| p.offset_ms).collect();
    (!v.is_empty()).then(|| (median(&v), v.len()))
}

/// How far each onset (flash or beep) sits from the whole-second grid of the
/// clip's content, in ms, against the median of those in the first `ref_secs`:
/// 0 while that track's timeline keeps pace with the content; a step where
/// its timestamps jumped (or stalled) against the content.
pub fn slips(times: &[f64], ref_secs: f64) -> Vec<f64> {
    let Some(&t0) = times.first() else { return Vec::new() };
    let r: Vec<f64> = times.iter().map(|t| (t - t0) - (t - t0).round()).collect();
    let head: Vec<f64> = times.iter().zip(&r).filter(|(t, _)| **t - t0 < ref_secs).map(|(_, r)| *r).collect();
    let base = median(&head);
    r.iter().map(|x| (x - base) * 1000.0).collect()
}

/// Transit of one SSRC's packets: arrival at the tap minus RTP time, in ms,
/// relative to the first packet (positive: later than its RTP clock says).
pub fn transit(seen: &[RtpSeen], ssrc: u32, clock: f64) -> Vec<(Instant, f64)> {
    let mut out = Vec::new();
    let mut first: Option<(Instant, i64)> = None;
    let mut prev: Option<(u32, i64)> = None;
    for p in seen.iter().filter(|p| p.ssrc == ssrc) {
        let ext = match prev {
            None => i64::from(p.ts),
            Some((pt, pe)) => pe + i64::from(p.ts.wrapping_sub(pt) as i32),
        };
        prev = Some((p.ts, ext));
        let (a0, t0) = *first.get_or_insert((p.at, ext));
        let d = p.at.saturating_duration_since(a0).as_secs_f64() * 1000.0 - (ext - t0) as f64 * 1000.0 / clock;
        out.push((p.at, d));
    }
    out
}

/// The audio SSRC: one packet per timestamp, stepping by multiples of 960.
pub fn audio_ssrc(seen: &[RtpSeen]) -> Option<u32> {
    let mut by: HashMap<u32, (usize, usize)> = HashMap::new();
    let mut last: HashMap<u32, u32> = HashMap::new();
    for p in seen {
        let e = by.entry(p.ssrc).or_default();
        e.0 += 1;
        if let Some(prev) = last.insert(p.ssrc, p.ts) {
            let d = p.ts.wrapping_sub(prev);
            if d != 0 && d % 960 == 0 && d < 48_000 {
                e.1 += 1;
            }
        }
    }
    by.into_iter().filter(|(_, (n, ok))| *n > 50 && *ok * 10 >= *n * 9).max_by_key(|(_, (n, _))| *n).map(|(s, _)| s)
}

/// "t:offset" for every pair, for the log.
pub fn describe(pairs: &[Pair]) -> String {
    pairs.iter().map(|p| format!("{:.2}s:{:+.0}", p.flash, p.offset_ms)).collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------
// What the browser sent: an RTP header tap
// ---------------------------------------------------------------------------

/// The clear-text header of one RTP packet from the browser (SRTP encrypts
/// only the payload).
#[derive(Clone, Copy, Debug)]
pub struct RtpSeen {
    pub at: Instant,
    pub ssrc: u32,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
}

fn rtp_header(p: &[u8], at: Instant) -> Option<RtpSeen> {
    // RFC 7983: 128..=191 is RTP/RTCP; RFC 5761: 192..=223 in byte 1 is RTCP.
    if p.len() < 12 || !(128..=191).contains(&p[0]) || (192..=223).contains(&p[1]) {
        return None;
    }
    Some(RtpSeen {
        at,
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        pt: p[1] & 0x7f,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        marker: p[1] & 0x80 != 0,
    })
}

/// A UDP relay between the browser and the server that forwards everything
/// unchanged and keeps the RTP headers the browser sent. The server announces
/// the tap as its ICE candidate (`--public-ip 127.0.0.1 --candidate-port PORT`).
pub struct RtpTap {
    pub port: u16,
    seen: Arc<Mutex<Vec<RtpSeen>>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl RtpTap {
    /// The browser-facing socket, bound before the server starts so that its
    /// port can be announced.
    pub fn bind() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").expect("bind tap socket")
    }

    pub fn start(down: UdpSocket, server: SocketAddr) -> RtpTap {
        let port = down.local_addr().expect("tap addr").port();
        let down = Arc::new(down);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let t = {
            let (seen, stop, threads) = (seen.clone(), stop.clone(), threads.clone());
            thread::Builder::new()
                .name("tap-up".into())
                .spawn(move || tap_up(down, server, seen, stop, threads))
                .expect("spawn tap thread")
        };
        threads.lock().unwrap().push(t);
        RtpTap { port, seen, stop, threads }
    }

    pub fn packets(&self) -> Vec<RtpSeen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RtpTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(t) = self.threads.lock().unwrap().pop() {
            let _ = t.join();
        }
    }
}

fn tap_up(
    down: Arc<UdpSocket>,
    server: SocketAddr,
    seen: Arc<Mutex<Vec<RtpSeen>>>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let _ = down.set_read_timeout(Some(Duration::from_millis(50)));
    let mut ups: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = down.recv_from(&mut buf) else { continue };
        let at = Instant::now();
        let up = ups
            .entry(from)
            .or_insert_with(|| {
                // One upstream socket per browser address, so replies map back.
                let up = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind tap upstream socket"));
                let (u, d, s) = (up.clone(), down.clone(), stop.clone());
                let t = thread::Builder::new()
                    .name("tap-down".into())
                    .spawn(move || {
                        let _ = u.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut b = vec![0u8; 65536];
                        while !s.load(Ordering::SeqCst) {
                            if let Ok((n, _)) = u.recv_from(&mut b) {
                                let _ = d.send_to(&b[..n], from);
                            }
                        }
                    })
                    .expect("spawn tap reply thread");
                threads.lock().unwrap().push(t);
                up
            })
            .clone();
        if let Some(h) = rtp_header(&buf[..n], at) {
            seen.lock().unwrap().push(h);
        }
        let _ = up.send_to(&buf[..n], server);
    }
}

/// The browser's video frames as RTP timestamps (extended, ascending, one per
/// frame) with their first packet's arrival: the SSRC with the most packets
/// among those that do not step by whole 20 ms Opus packets (960 at 48 kHz).
pub fn video_frames(seen: &[RtpSeen]) -> Option<(u32, Vec<(i64, Instant)>)> {
    let mut by_ssrc: HashMap<u32, Vec<&RtpSeen>> = HashMap::new();
    for p in seen {
        by_ssrc.entry(p.ssrc).or_default().push(p);
    }
    let mut best: Option<(u32, usize)> = None;
    for (ssrc, ps) in &by_ssrc {
        let mut steps: Vec<u32> = ps.windows(2).map(|w| w[1].ts.wrapping_sub(w[0].ts)).filter(|d| *d != 0 && *d < 1 << 31).collect();
        steps.sort_unstable();
        let audio_like = !steps.is_empty() && steps.iter().filter(|d| *d % 960 == 0).count() * 10 >= steps.len() * 9;
        if !audio_like && best.is_none_or(|(_, n)| ps.len() > n) {
            best = Some((*ssrc, ps.len()));
        }
    }
    let (ssrc, _) = best?;
    let mut frames: Vec<(i64, Instant)> = Vec::new();
    let mut prev: Option<(u32, i64)> = None;
    let mut firsts: HashMap<i64, Instant> = HashMap::new();
    for p in &by_ssrc[&ssrc] {
        let ext = match prev {
            None => i64::from(p.ts),
            Some((pt, pe)) => pe + i64::from(p.ts.wrapping_sub(pt) as i32),
        };
        prev = Some((p.ts, ext));
        let e = firsts.entry(ext).or_insert(p.at);
        if p.at < *e {
            *e = p.at;
        }
    }
    frames.extend(firsts);
    frames.sort_by_key(|f| f.0);
    Some((ssrc, frames))
}

/// How the RTMP output's video timestamps (seconds) line up with the RTP
/// timestamps the browser sent (90 kHz): the constant that maps the most
/// output frames onto a sent frame within `tol_ms`, and how many it maps.
#[derive(Debug, Clone, Copy)]
pub struct VideoMapping {
    /// output ms = (rtp − first rtp) / 90 + offset_ms
    pub offset_ms: f64,
    pub matched: usize,
    pub total: usize,
    pub max_err_ms: f64,
}

pub fn map_video(out_times: &[f64], rtp_frames: &[i64], tol_ms: f64) -> Option<VideoMapping> {
    let first = *rtp_frames.first()?;
    let sent: Vec<f64> = rtp_frames.iter().map(|t| (t - first) as f64 / 90.0).collect();
    let out: Vec<f64> = out_times.iter().map(|t| t * 1000.0).collect();
    let near = |x: f64| -> f64 {
        let i = sent.partition_point(|s| *s < x);
        let a = if i < sent.len() { (sent[i] - x).abs() } else { f64::INFINITY };
        let b = if i > 0 { (sent[i - 1] - x).abs() } else { f64::INFINITY };
        a.min(b)
    };
    let mut best: Option<VideoMapping> = None;
    // Candidates: a few output frames from the start, middle and end against every sent
    // frame (the server may move the video timeline once, later only, when RTCP sender
    // reports refine A/V alignment; the mapping that holds for most of the run wins).
    let n = out.len();
    let picks: Vec<f64> = [0, 1, 2, n / 2, n / 2 + 1, n.saturating_sub(2)].iter().filter_map(|i| out.get(*i).copied()).collect();
    for o0 in picks.iter() {
        for s in &sent {
            let off = o0 - s;
            let errs: Vec<f64> = out.iter().map(|o| near(o - off)).collect();
            let matched = errs.iter().filter(|e| **e <= tol_ms).count();
            if best.is_none_or(|b| matched > b.matched) {
                let max_err_ms = errs.iter().cloned().filter(|e| *e <= tol_ms).fold(0.0, f64::max);
                best = Some(VideoMapping { offset_ms: off, matched, total: out.len(), max_err_ms });
            }
        }
    }
    best
}
