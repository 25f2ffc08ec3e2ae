//! The media every publisher sends: one moving test pattern encoded once per
//! frame with openh264, and a looped Opus tone encoded once at start.
//!
//! Encoding is the expensive part of a synthetic publisher, so it is done once
//! for all of them: every publisher sends the same encoded access unit (with
//! its own wall-clock SEI, RTP sequence numbers, timestamps and SSRC). A
//! keyframe asked for by one publisher's receiver (PLI/FIR) is therefore a
//! keyframe for all.

use std::time::{Duration, Instant};

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile, RateControlMode,
    UsageType,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use crate::h264::annexb_nal_ranges;

#[derive(Debug, Clone, Copy)]
pub struct VideoParams {
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    pub kbps: u32,
    /// Key frame every `gop` frames.
    pub gop: u32,
}

/// One encoded access unit, Annex B, with its NAL unit boundaries.
#[derive(Clone)]
pub struct EncodedFrame {
    pub data: Vec<u8>,
    pub ranges: Vec<(usize, usize)>,
    pub idr: bool,
}

impl EncodedFrame {
    pub fn nals(&self) -> impl Iterator<Item = &[u8]> {
        self.ranges.iter().map(|&(a, b)| &self.data[a..b])
    }
}

/// Moving test pattern → H.264 (Constrained Baseline, one slice per frame).
pub struct VideoSource {
    params: VideoParams,
    enc: Encoder,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    frame: u64,
    since_idr: u32,
    noise: u64,
    /// Time spent in `Encoder::encode` (not the pattern drawing).
    pub encode_time: Duration,
    pub encode_max: Duration,
    pub frames: u64,
    pub idrs: u64,
    pub bytes: u64,
    /// `--loop-gop`: one GOP encoded at the start, served in a loop, and the next index.
    looped: Option<(Vec<EncodedFrame>, usize)>,
}

impl VideoSource {
    pub fn new(params: VideoParams) -> Result<Self, String> {
        if !params.width.is_multiple_of(2) || !params.height.is_multiple_of(2) || params.width < 16 || params.height < 16 {
            return Err(format!("--size {}x{}: width and height must be even and >= 16", params.width, params.height));
        }
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(params.kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(params.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .complexity(Complexity::Low)
            // openh264 controls the bitrate only if it may skip frames; skips are counted.
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::from_num_frames(params.gop))
            // Key frames only on schedule or on request, never on the encoder's own whim.
            .scene_change_detect(false)
            // One thread: the tool is pinned to one core and measured.
            .num_threads(1);
        let enc = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("openh264 encoder: {e}"))?;
        let luma = params.width * params.height;
        Ok(VideoSource {
            params,
            enc,
            y: vec![0; luma],
            u: vec![128; luma / 4],
            v: vec![128; luma / 4],
            frame: 0,
            since_idr: 0,
            noise: 0x9e37_79b9_7f4a_7c15,
            encode_time: Duration::ZERO,
            encode_max: Duration::ZERO,
            frames: 0,
            idrs: 0,
            bytes: 0,
            looped: None,
        })
    }

    /// Draw and encode the next frame; `force_idr` makes it a key frame.
    /// `Ok(None)` when the encoder produced nothing for this frame.
    /// Encode one GOP (`gop` frames from an IDR) now and serve [`VideoSource::encode`]
    /// from it from then on, in a loop: no encoding in the run, so the tool's CPU goes
    /// to its publishers and viewers (a request for a key frame restarts the loop, whose
    /// first frame is the IDR). The counters restart: they count frames served.
    pub fn start_loop(&mut self) -> Result<(), String> {
        let n = self.params.gop.max(1) as usize;
        let mut frames: Vec<EncodedFrame> = Vec::with_capacity(n);
        for _ in 0..4 * n {
            if frames.len() == n {
                break;
            }
            match self.encode(frames.is_empty())? {
                Some(f) if frames.is_empty() && !f.idr => {}
                Some(f) if !frames.is_empty() && f.idr => break,
                Some(f) => frames.push(f),
                None => {}
            }
        }
        if frames.is_empty() {
            return Err("--loop-gop: the encoder gave no key frame".into());
        }
        (self.frames, self.idrs, self.bytes) = (0, 0, 0);
        self.looped = Some((frames, 0));
        Ok(())
    }

    pub fn encode(&mut self, force_idr: bool) -> Result<Option<EncodedFrame>, String> {
        if let Some((frames, next)) = self.looped.as_mut() {
            if force_idr || *next >= frames.len() {
                *next = 0;
            }
            let f = frames[*next].clone();
            *next += 1;
            self.frames += 1;
            self.bytes += f.data.len() as u64;
            self.idrs += u64::from(f.idr);
            return Ok(Some(f));
        }
        self.draw();
        let (w, h) = (self.params.width, self.params.height);
        if force_idr || self.since_idr + 1 >= self.params.gop.max(1) {
            self.enc.force_intra_frame();
        }
        let t = Instant::now();
        let yuv = YUVSlices::new((&self.y, &self.u, &self.v), (w, h), (w, w / 2, w / 2));
        let bs = self.enc.encode(&yuv).map_err(|e| format!("openh264 encode: {e}"))?;
        let idr = matches!(bs.frame_type(), FrameType::IDR);
        let data = bs.to_vec();
        let dt = t.elapsed();
        self.encode_time += dt;
        self.encode_max = self.encode_max.max(dt);
        self.frame += 1;
        if data.is_empty() {
            return Ok(None);
        }
        self.frames += 1;
        self.bytes += data.len() as u64;
        if idr {
            self.idrs += 1;
            self.since_idr = 0;
        } else {
            self.since_idr += 1;
        }
        let mut ranges = Vec::new();
        annexb_nal_ranges(&data, &mut ranges);
        Ok(Some(EncodedFrame { data, ranges, idr }))
    }

    /// Diagonal luma ramp scrolling 3 px a frame, a bright square bouncing
    /// across it, chroma bands drifting, and low-amplitude noise everywhere so
    /// the rate control has texture to spend the target bitrate on.
    fn draw(&mut self) {
        let (w, h) = (self.params.width, self.params.height);
        let f = self.frame as usize;
        let side = (h / 4).max(8);
        let span_x = (w - side).max(1);
        let span_y = (h - side).max(1);
        let bx = bounce(f * 5, span_x);
        let by = bounce(f * 3, span_y);
        let mut s = self.noise;
        for row in 0..h {
            let line = &mut self.y[row * w..(row + 1) * w];
            let in_rows = row >= by && row < by + side;
            for (col, px) in line.iter_mut().enumerate() {
                // xorshift64: 4 noise values per step.
                if col % 4 == 0 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                }
                let n = ((s >> ((col % 4) * 8)) & 0x0f) as usize;
                let base = if in_rows && col >= bx && col < bx + side { 235 } else { (col + row + 3 * f) & 0xff };
                *px = (base.min(239) + n) as u8;
            }
        }
        self.noise = s;
        let cw = w / 2;
        for row in 0..h / 2 {
            for col in 0..cw {
                let i = row * cw + col;
                self.u[i] = (((col + f) / 16 % 8) * 24 + 40) as u8;
                self.v[i] = (((row + 2 * f) / 16 % 8) * 24 + 40) as u8;
            }
        }
    }
}

/// Triangle wave 0..=span..=0 with period 2*span.
fn bounce(t: usize, span: usize) -> usize {
    let p = t % (2 * span);
    if p <= span { p } else { 2 * span - p }
}

/// 20 ms Opus frames at 48 kHz stereo: one second of a 440 Hz tone (a whole
/// number of periods, so it loops without a click), encoded once at start.
pub struct AudioSource {
    frames: Vec<Vec<u8>>,
}

pub const OPUS_FRAME: Duration = Duration::from_millis(20);
/// RTP timestamp units per frame (48 kHz clock, RFC 7587 §4.1).
pub const OPUS_FRAME_TICKS: u32 = 960;

impl AudioSource {
    pub fn new() -> Result<Self, String> {
        const RATE: usize = 48_000;
        const CHANNELS: usize = 2;
        const FRAMES: usize = 50;
        let mut enc = opus_rs::OpusEncoder::new(RATE as i32, CHANNELS, opus_rs::Application::Audio)
            .map_err(|e| format!("Opus encoder: {e}"))?;
        enc.bitrate_bps = 64_000;
        let n = OPUS_FRAME_TICKS as usize;
        let mut pcm = vec![0f32; n * CHANNELS];
        let mut out = vec![0u8; 1500];
        let mut frames = Vec::with_capacity(FRAMES);
        for k in 0..FRAMES {
            for i in 0..n {
                let t = (k * n + i) as f64 / RATE as f64;
                let s = (0.1 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32;
                pcm[2 * i] = s;
                pcm[2 * i + 1] = s;
            }
            let len = enc.encode(&pcm, n, &mut out).map_err(|e| format!("Opus encode: {e}"))?;
            frames.push(out[..len].to_vec());
        }
        Ok(AudioSource { frames })
    }

    /// The `k`-th frame of the endless stream.
    pub fn frame(&self, k: u64) -> &[u8] {
        &self.frames[(k % self.frames.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_looped_gop_starts_on_its_idr_and_restarts_on_request() {
        let mut v = VideoSource::new(VideoParams { width: 160, height: 96, fps: 30.0, kbps: 300, gop: 5 }).unwrap();
        v.start_loop().unwrap();
        let idrs: Vec<bool> = (0..11).map(|_| v.encode(false).unwrap().unwrap().idr).collect();
        assert_eq!(idrs, [true, false, false, false, false, true, false, false, false, false, true]);
        assert!(v.encode(true).unwrap().unwrap().idr);
        assert!(!v.encode(false).unwrap().unwrap().idr);
        assert_eq!((v.frames, v.idrs), (13, 4));
    }

    #[test]
    fn opus_frames_decode() {
        let a = AudioSource::new().unwrap();
        let mut dec = opus_rs::OpusDecoder::new(48_000, 2).unwrap();
        let mut pcm = vec![0f32; 960 * 2];
        for k in 0..50 {
            let f = a.frame(k);
            assert!(!f.is_empty() && f.len() < 400, "frame {k}: {} bytes", f.len());
            let n = dec.decode(f, 960, &mut pcm).unwrap();
            assert_eq!(n, 960);
        }
        // A tone, not silence.
        assert!(pcm.iter().any(|s| s.abs() > 0.02));
    }
}
