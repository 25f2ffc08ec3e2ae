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
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    Ok(Onsets { flashes, beeps, video_frames: luma.len(), audio_windows: level.len(), luma: lum, level: lev })
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
    if !(bright - dark > 40.0) {
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
    if !(peak - floor > 20.0) {
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

/// "t:offset" for every pair, for the log.
pub fn describe(pairs: &[Pair]) -> String {
    pairs.iter().map(|p| format!("{:.2}s:{:+.0}", p.flash, p.offset_ms)).collect::<Vec<_>>().join(" ")
}
