//! AAC → Opus, once per stream: the audio half of playing an RTMP publisher's
//! stream to WebRTC viewers (issue 12 builds on it). Sans-IO: FLV AAC bodies in,
//! Opus packets with 48 kHz RTP timestamps out.
//!
//! - AAC-LC is decoded with fdk-aac (raw transport, configured from the FLV AAC
//!   sequence header's AudioSpecificConfig), mono or stereo.
//! - Any other sample rate is resampled to 48 kHz (Opus has no 44.1 kHz) by a
//!   rational polyphase windowed-sinc filter ([`Resampler`]: 32 taps, Blackman
//!   window, cutoff at 92 % of the lower Nyquist rate, unit DC gain per phase).
//! - Opus at 48 kHz, 20 ms frames (960 samples), the channel count of the
//!   source, at `bitrate` (default [`DEFAULT_BITRATE`]: 128 kbit/s stereo, music
//!   quality; one peer's users complained about 64).
//! - Timestamps: the first frame anchors the 48 kHz timeline at its FLV time;
//!   after that each packet is exactly 960 ticks after the previous one. A jump
//!   of the FLV timeline of more than [`REANCHOR_MS`] from where the samples say
//!   it should be (a publisher that came back) re-anchors, dropping the partial
//!   frame.
//!
//! Not here: HE-AAC (SBR/PS) is decoded by fdk at its core rate and so works,
//! but not tested; more than 2 channels are refused.

use std::collections::VecDeque;

use fdk_aac::dec::{Decoder, Transport};
use opus_rs::{Application, OpusEncoder};

/// Opus bitrate for stereo (mono: half).
pub const DEFAULT_BITRATE: u32 = 128_000;
/// Opus encoder complexity (0..=10; libopus defaults to 10): 5 halves the
/// encoder's cost for a difference music listeners do not hear at 128 kbit/s.
pub const OPUS_COMPLEXITY: i32 = 5;
/// 20 ms at 48 kHz.
pub const OPUS_FRAME: usize = 960;
/// A timeline jump larger than this re-anchors the Opus timestamps.
pub const REANCHOR_MS: i64 = 200;
/// Largest Opus packet we produce room for.
const MAX_PACKET: usize = 1500;
/// AAC frames decode to at most this many samples per channel (HE-AAC: 2048).
const MAX_AAC_SAMPLES: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AacOpusError {
    /// Not an FLV AAC body, or a frame before the sequence header.
    NotAac,
    /// The AudioSpecificConfig is refused by the decoder, or names > 2 channels.
    BadConfig,
    /// The Opus encoder refused its setup or a frame.
    Encoder,
}

impl std::fmt::Display for AacOpusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AacOpusError::NotAac => "not an FLV AAC body (or a frame before the sequence header)",
            AacOpusError::BadConfig => "unsupported AAC configuration (AAC-LC, 1 or 2 channels)",
            AacOpusError::Encoder => "the Opus encoder failed",
        })
    }
}

/// One Opus packet: 20 ms at 48 kHz.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// RTP timestamp (48 kHz, from the stream's first audio frame's FLV time).
    pub ts48: u64,
    pub data: Vec<u8>,
}

/// Counters for the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AacOpusStats {
    pub aac_frames: u64,
    /// AAC frames the decoder refused (skipped; the timeline goes on).
    pub decode_errors: u64,
    pub opus_packets: u64,
    pub reanchors: u64,
}

/// See the module docs.
pub struct AacToOpus {
    decoder: Option<Decoder>,
    channels: usize,
    in_rate: u32,
    resampler: Option<Resampler>,
    encoder: Option<OpusEncoder>,
    bitrate: u32,
    /// 48 kHz interleaved samples waiting for a whole Opus frame.
    pcm48: Vec<f32>,
    /// RTP timestamp of the first sample in `pcm48`.
    next_ts48: Option<u64>,
    /// FLV time (ms) and 48 kHz time of the anchor, to check later frames against.
    anchor: Option<(i64, u64)>,
    /// 48 kHz samples per channel produced since the anchor.
    produced: u64,
    decoded: Vec<i16>,
    out: VecDeque<OpusPacket>,
    pub stats: AacOpusStats,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus").field("channels", &self.channels).field("in_rate", &self.in_rate).finish_non_exhaustive()
    }
}

impl AacToOpus {
    /// `bitrate` for stereo; mono gets half.
    pub fn new(bitrate: u32) -> Self {
        AacToOpus {
            decoder: None,
            channels: 0,
            in_rate: 0,
            resampler: None,
            encoder: None,
            bitrate,
            pcm48: Vec::new(),
            next_ts48: None,
            anchor: None,
            produced: 0,
            decoded: vec![0; MAX_AAC_SAMPLES * 2],
            out: VecDeque::new(),
            stats: AacOpusStats::default(),
        }
    }

    /// Channels of the Opus output (0 before the sequence header).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// An FLV AUDIODATA body: the AAC sequence header (`0xAF 0x00 ASC`) or a
    /// raw frame (`0xAF 0x01 ...`) at FLV time `ts_ms`.
    pub fn push_flv(&mut self, ts_ms: u32, body: &[u8]) -> Result<(), AacOpusError> {
        match body {
            [h, 0, asc @ ..] if h >> 4 == 10 => self.configure(asc),
            [h, 1, frame @ ..] if h >> 4 == 10 => self.frame(i64::from(ts_ms), frame),
            _ => Err(AacOpusError::NotAac),
        }
    }

    #[must_use]
    pub fn poll_packet(&mut self) -> Option<OpusPacket> {
        self.out.pop_front()
    }

    fn configure(&mut self, asc: &[u8]) -> Result<(), AacOpusError> {
        let (rate, channels) = parse_asc(asc).ok_or(AacOpusError::BadConfig)?;
        if !(1..=2).contains(&channels) {
            return Err(AacOpusError::BadConfig);
        }
        let mut dec = Decoder::new(Transport::Raw);
        dec.config_raw(asc).map_err(|_| AacOpusError::BadConfig)?;
        let _ = dec.set_max_output_channels(channels);
        let mut enc = OpusEncoder::new(48_000, channels, Application::Audio).map_err(|_| AacOpusError::Encoder)?;
        enc.bitrate_bps = i32::try_from(self.bitrate / (3 - channels as u32)).unwrap_or(128_000);
        enc.complexity = OPUS_COMPLEXITY;
        self.decoder = Some(dec);
        self.encoder = Some(enc);
        self.resampler = (rate != 48_000).then(|| Resampler::new(rate, 48_000, channels));
        self.channels = channels;
        self.in_rate = rate;
        self.pcm48.clear();
        self.anchor = None;
        self.next_ts48 = None;
        Ok(())
    }

    fn frame(&mut self, ts_ms: i64, frame: &[u8]) -> Result<(), AacOpusError> {
        let ch = self.channels;
        if self.decoder.is_none() {
            return Err(AacOpusError::NotAac);
        }
        self.stats.aac_frames += 1;
        // Where the samples say this frame should start, against where the FLV says.
        if let Some((anchor_ms, _)) = self.anchor {
            let expected_ms = anchor_ms + (self.produced as i64 + self.pending_in_input()) / 48;
            if (ts_ms - expected_ms).abs() > REANCHOR_MS {
                self.stats.reanchors += 1;
                self.anchor = None;
                self.pcm48.clear();
                if let Some(r) = self.resampler.as_mut() {
                    r.reset();
                }
            }
        }
        if self.anchor.is_none() {
            let ts48 = u64::try_from(ts_ms).unwrap_or(0) * 48;
            self.anchor = Some((ts_ms, ts48));
            self.next_ts48 = Some(ts48);
            self.produced = 0;
        }
        let Some(dec) = self.decoder.as_mut() else { return Ok(()) };
        if dec.fill(frame).is_err() || dec.decode_frame(&mut self.decoded).is_err() {
            self.stats.decode_errors += 1;
            return Ok(());
        }
        let n = dec.decoded_frame_size().min(self.decoded.len());
        let pcm: Vec<f32> = self.decoded.iter().take(n).map(|&s| f32::from(s) / 32768.0).collect();
        match self.resampler.as_mut() {
            Some(r) => r.process(&pcm, &mut self.pcm48),
            None => self.pcm48.extend_from_slice(&pcm),
        }
        self.encode_ready(ch)
    }

    /// Input samples (per channel, at 48 kHz) still inside the resampler.
    fn pending_in_input(&self) -> i64 {
        (self.pcm48.len() / self.channels.max(1)) as i64
    }

    fn encode_ready(&mut self, ch: usize) -> Result<(), AacOpusError> {
        let Some(enc) = self.encoder.as_mut() else { return Ok(()) };
        let frame = OPUS_FRAME * ch;
        let mut buf = [0u8; MAX_PACKET];
        while self.pcm48.len() >= frame {
            let n = enc.encode(self.pcm48.get(..frame).unwrap_or(&[]), OPUS_FRAME, &mut buf).map_err(|_| AacOpusError::Encoder)?;
            self.pcm48.drain(..frame);
            let ts48 = self.next_ts48.unwrap_or(0);
            self.next_ts48 = Some(ts48 + OPUS_FRAME as u64);
            self.produced += OPUS_FRAME as u64;
            self.stats.opus_packets += 1;
            self.out.push_back(OpusPacket { ts48, data: buf.get(..n).unwrap_or(&[]).to_vec() });
        }
        Ok(())
    }
}

/// (sample rate, channels) of an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
fn parse_asc(asc: &[u8]) -> Option<(u32, usize)> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let b0 = *asc.first()?;
    let b1 = *asc.get(1)?;
    let index = usize::from(((b0 & 0x07) << 1) | (b1 >> 7));
    let rate = match index {
        15 => {
            let b2 = u32::from(*asc.get(2)?);
            let b3 = u32::from(*asc.get(3)?);
            let b4 = u32::from(*asc.get(4)?);
            ((u32::from(b1 & 0x7f) << 17) | (b2 << 9) | (b3 << 1) | (b4 >> 7)) & 0x00ff_ffff
        }
        i => *RATES.get(i)?,
    };
    let channels = if index == 15 { usize::from((*asc.get(4)? >> 3) & 0x0f) } else { usize::from((b1 >> 3) & 0x0f) };
    (8000..=96000).contains(&rate).then_some((rate, channels))
}

/// Rational polyphase resampler, windowed sinc (see the module docs).
#[derive(Debug, Clone)]
pub struct Resampler {
    /// Output/input rate ratio L/M, reduced.
    l: usize,
    m: usize,
    channels: usize,
    /// Taps per side.
    half: usize,
    /// `l` phases × `2 * half` taps.
    table: Vec<f32>,
    /// Input history, interleaved; logical input index 0 is `buf[0]`.
    buf: Vec<f32>,
    /// Next output: input index `i` (of the tap centre) and phase `p` (0..l).
    i: usize,
    p: usize,
}

impl Resampler {
    pub fn new(in_rate: u32, out_rate: u32, channels: usize) -> Self {
        let g = gcd(in_rate as usize, out_rate as usize).max(1);
        let (l, m) = (out_rate as usize / g, in_rate as usize / g);
        let half = 16;
        // Cutoff in input-sample units: the lower Nyquist rate, with a margin.
        let fc = (l as f64 / m as f64).min(1.0) * 0.92;
        let mut table = Vec::with_capacity(l * 2 * half);
        for p in 0..l {
            let frac = p as f64 / l as f64;
            let mut taps: Vec<f64> = (0..2 * half)
                .map(|j| {
                    // Distance from the output point to input sample (i - half + 1 + j).
                    let d = j as f64 - (half as f64 - 1.0) - frac;
                    let x = fc * d;
                    let sinc = if x.abs() < 1e-12 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
                    // Blackman window over (-half, half).
                    let w = 0.42 + 0.5 * (std::f64::consts::PI * d / half as f64).cos() + 0.08 * (2.0 * std::f64::consts::PI * d / half as f64).cos();
                    if d.abs() >= half as f64 { 0.0 } else { sinc * w }
                })
                .collect();
            let sum: f64 = taps.iter().sum();
            if sum.abs() > 1e-9 {
                taps.iter_mut().for_each(|t| *t /= sum);
            }
            table.extend(taps.into_iter().map(|t| t as f32));
        }
        let mut r = Resampler { l, m, channels: channels.max(1), half, table, buf: Vec::new(), i: 0, p: 0 };
        r.reset();
        r
    }

    /// Forget the history (a new timeline).
    pub fn reset(&mut self) {
        self.buf.clear();
        // half - 1 samples of silence before the first input: the first output sits on it.
        self.buf.resize((self.half - 1) * self.channels, 0.0);
        self.i = self.half - 1;
        self.p = 0;
    }

    /// Resample interleaved `input`, appending interleaved output to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let ch = self.channels;
        self.buf.extend_from_slice(input);
        let frames = self.buf.len() / ch;
        let taps = 2 * self.half;
        while self.i + self.half < frames {
            let start = self.i + 1 - self.half;
            let coefs = self.table.get(self.p * taps..(self.p + 1) * taps).unwrap_or(&[]);
            // The window of input frames under the taps, as one slice: no index checks in
            // the multiply-accumulate loops.
            let Some(win) = self.buf.get(start * ch..(start + taps) * ch) else { break };
            if ch == 2 {
                let (mut l, mut r) = (0.0f32, 0.0f32);
                for (&k, s) in coefs.iter().zip(win.chunks_exact(2)) {
                    if let [a, b] = s {
                        l += k * a;
                        r += k * b;
                    }
                }
                out.push(l);
                out.push(r);
            } else {
                for c in 0..ch {
                    out.push(coefs.iter().zip(win.iter().skip(c).step_by(ch)).map(|(k, s)| k * s).sum());
                }
            }
            self.p += self.m;
            while self.p >= self.l {
                self.p -= self.l;
                self.i += 1;
            }
        }
        // Keep only the history the next outputs need.
        let keep_from = self.i + 1 - self.half;
        if keep_from > 0 {
            self.buf.drain(..(keep_from * ch).min(self.buf.len()));
            self.i -= keep_from;
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport as EncTransport};
    use opus_rs::OpusDecoder;

    /// `secs` of a `hz` sine at `rate`, stereo, AAC-LC encoded by fdk: the FLV
    /// sequence header and the FLV frame bodies with their ms timestamps.
    fn aac_sine(rate: u32, hz: f64, secs: f64) -> (Vec<u8>, Vec<(u32, Vec<u8>)>) {
        let enc = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(128_000),
            sample_rate: rate,
            transport: EncTransport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .unwrap();
        let info = enc.info().unwrap();
        let asc = info.confBuf[..info.confSize as usize].to_vec();
        let mut header = vec![0xAF, 0];
        header.extend_from_slice(&asc);
        let total = (f64::from(rate) * secs) as usize;
        let pcm: Vec<i16> = (0..total)
            .flat_map(|n| {
                let v = ((2.0 * std::f64::consts::PI * hz * n as f64 / f64::from(rate)).sin() * 12000.0) as i16;
                [v, v]
            })
            .collect();
        let mut frames = Vec::new();
        let mut out = vec![0u8; 4096];
        let mut fed = 0;
        let mut count = 0u32;
        while fed < pcm.len() {
            let chunk = &pcm[fed..(fed + 2048).min(pcm.len())];
            let r = enc.encode(chunk, &mut out).unwrap();
            fed += r.input_consumed;
            if r.output_size > 0 {
                let mut b = vec![0xAF, 1];
                b.extend_from_slice(&out[..r.output_size]);
                frames.push(((u64::from(count) * 1024 * 1000 / u64::from(rate)) as u32, b));
                count += 1;
            }
        }
        (header, frames)
    }

    fn check_sine(rate: u32) {
        let (header, frames) = aac_sine(rate, 1000.0, 2.0);
        let mut t = AacToOpus::new(DEFAULT_BITRATE);
        t.push_flv(0, &header).unwrap();
        let mut packets = Vec::new();
        for (ts, b) in &frames {
            t.push_flv(*ts, b).unwrap();
            while let Some(p) = t.poll_packet() {
                packets.push(p);
            }
        }
        assert!(packets.len() >= 90, "{} packets from 2 s", packets.len());
        for w in packets.windows(2) {
            assert_eq!(w[1].ts48 - w[0].ts48, 960, "exact 20 ms steps");
        }
        assert_eq!(t.stats.decode_errors, 0);
        // Decode the Opus and find the tone: zero crossings over the steady middle.
        let mut d = OpusDecoder::new(48_000, 2).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0f32; 960 * 2];
        for p in &packets {
            let n = d.decode(&p.data, 960, &mut buf).unwrap();
            pcm.extend(buf[..n * 2].iter().step_by(2).copied());
        }
        let mid = &pcm[24_000..72_000]; // 0.5 s .. 1.5 s
        let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        let hz = crossings as f64 / 2.0 / 1.0;
        assert!((hz - 1000.0).abs() < 10.0, "tone at {hz} Hz after {rate} Hz AAC → 48 kHz Opus");
        let rms = (mid.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / mid.len() as f64).sqrt();
        assert!(rms > 0.15 && rms < 0.40, "level {rms} (the sine's is 0.26)");
    }

    #[test]
    fn aac_44100_becomes_opus_48k_with_the_same_tone() {
        check_sine(44_100);
    }

    #[test]
    fn aac_48000_needs_no_resampling() {
        check_sine(48_000);
    }

    #[test]
    fn refuses_what_it_cannot_take_and_reanchors_after_a_jump() {
        let mut t = AacToOpus::new(DEFAULT_BITRATE);
        assert_eq!(t.push_flv(0, &[0xAF, 1, 1, 2, 3]), Err(AacOpusError::NotAac));
        assert_eq!(t.push_flv(0, &[0x2F, 0]), Err(AacOpusError::NotAac));
        assert_eq!(t.push_flv(0, &[0xAF, 0, 0xff]), Err(AacOpusError::BadConfig));
        let (header, frames) = aac_sine(48_000, 440.0, 1.0);
        t.push_flv(0, &header).unwrap();
        for (ts, b) in &frames {
            t.push_flv(*ts, b).unwrap();
        }
        // The publisher comes back 10 s later: the timeline re-anchors there.
        for (ts, b) in &frames {
            t.push_flv(*ts + 10_000, b).unwrap();
        }
        assert_eq!(t.stats.reanchors, 1);
        let last = std::iter::from_fn(|| t.poll_packet()).last().unwrap();
        assert!(last.ts48 >= 10_000 * 48, "{}", last.ts48);
    }

    #[test]
    fn resampler_keeps_stereo_channels_apart() {
        // Left a 1 kHz sine, right a constant: each comes out on its own side.
        let mut r = Resampler::new(44_100, 48_000, 2);
        let input: Vec<f32> = (0..44_100)
            .flat_map(|n| [(2.0 * std::f32::consts::PI * 1000.0 * n as f32 / 44_100.0).sin() * 0.5, -0.25])
            .collect();
        let mut out = Vec::new();
        for chunk in input.chunks(2048) {
            r.process(chunk, &mut out);
        }
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        let right: Vec<f32> = out.iter().skip(1).step_by(2).copied().collect();
        assert!(right[100..].iter().all(|v| (v + 0.25).abs() < 1e-3), "right stays -0.25");
        let mid = &left[12_000..36_000];
        let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((crossings as i64 - 1000).abs() <= 2, "{crossings} crossings in 0.5 s: 1 kHz at 48 kHz");
        let peak = mid.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
    }

    #[test]
    fn resampler_keeps_dc_and_rate() {
        let mut r = Resampler::new(44_100, 48_000, 1);
        let mut out = Vec::new();
        for _ in 0..10 {
            r.process(&[0.5; 4410], &mut out);
        }
        // 1 s in → 1 s out, less the filter's half length.
        assert!((47_900..=48_000).contains(&out.len()), "{}", out.len());
        assert!(out[100..].iter().all(|v| (v - 0.5).abs() < 1e-3));
    }
}
