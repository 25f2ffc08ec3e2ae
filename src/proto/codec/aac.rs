//! Opus → AAC-LC audio bridge for RTMP players (RFC 6716, ISO/IEC 14496-3,
//! Adobe FLV spec v10.1 §E.4.2).
//!
//! Implemented:
//! - [`OpusToAac`]: decodes one stream's Opus packets (48 kHz, RFC 6716) with
//!   the pure-Rust `opus-rs` crate (a port of libopus with its concealment
//!   and FEC semantics) and encodes AAC-LC once per stream with `fdk-aac`,
//!   giving FLV AUDIODATA bodies ready for every player.
//! - A timeline that cannot drift: the PCM fed to the encoder is counted in
//!   samples and always equals the span of RTP time seen. A gap in the RTP
//!   timestamps (loss, DTX) is filled: first with the decoder's packet loss
//!   concealment (at most [`MAX_CONCEAL_SAMPLES`], the last concealed chunk
//!   faded out when silence follows), then with silence. A gap of at most
//!   120 ms goes through the next packet's in-band FEC (RFC 6716 §2.1.7,
//!   LBRR frames §4.2.5): the last lost frame is rebuilt when the sender
//!   sent LBRR, the rest is concealed. A packet that cannot be decoded is
//!   concealed for the duration its TOC byte announces.
//! - [`opus_packet_samples`]: the duration of an Opus packet from its TOC byte
//!   and, for code 3, its frame count byte (RFC 6716 §3.1, §3.2.5).
//! - [`OpusToAac::flv_sequence_header`]: the AudioSpecificConfig (ISO/IEC
//!   14496-3 §1.6.2.1) for AAC-LC, 48 kHz, 1 or 2 channels.
//!
//! Encoder delay (priming) and `sample_pos`: fdk-aac reports its codec delay
//! `D` (`nDelay`, 2048 samples for AAC-LC at 48 kHz): decoded sample `n` is
//! encoder input sample `n - D`. [`OpusToAac::new`] puts `P = (-D) mod 1024`
//! zero samples ahead of the first Opus sample so that `P + D = 1024 * k0`,
//! and drops the first `k0` access units: their decoded output lies wholly
//! before the first Opus sample. Emitted frame `m` then decodes to exactly
//! the Opus samples `[1024 m, 1024 m + 1024)` after the first packet's RTP
//! timestamp, and its [`AacFrame::sample_pos`] is `1024 m`: audio lines up
//! with the RTP timeline to the sample (checked against ffmpeg's decoder in
//! the tests). The price is that a player starting at the first emitted frame
//! lacks the MDCT overlap of the dropped one before it, so the first 21 ms
//! fade in, exactly as for a player that joins a live stream mid-way.
//!
//! Timestamps: extended RTP timestamps (48 kHz, RFC 7587 §4.1). A packet
//! that starts before the end of the audio already produced (duplicate,
//! reordered too late, overlapping) is dropped and counted, unless it is more
//! than [`MAX_BACKWARD_SAMPLES`] back: then the sender restarted its clock
//! and the timeline continues from the new timestamp (counted as a
//! discontinuity; `sample_pos` stays monotonic but is no longer
//! `rtp_ts - first_rtp_ts`). A gap above [`MAX_FILL_SAMPLES`] is concealed
//! and padded with silence to the next AAC frame boundary, and the rest is
//! skipped: later frames carry `sample_pos` values that jump by the skipped
//! amount, so the audio stays on the RTP timeline without encoding minutes of
//! silence.
//!
//! Bounds: the PCM FIFO holds less than one AAC frame plus one Opus packet
//! (at most 1023 + 5760 samples per channel, under 150 ms); at most
//! [`MAX_QUEUED_FRAMES`] encoded frames wait for [`OpusToAac::poll_frame`],
//! and beyond that the oldest is dropped and counted. One call fills at most
//! `MAX_FILL_SAMPLES` of gap, so its work is bounded.
//!
//! Robustness: the decoder never sees an empty packet (the crate takes that
//! as a concealment request). A decoder panic would be a bug in the decoder
//! crate (none was seen in 20 000 random packets); it is caught, counted,
//! the decoder replaced and the packet concealed, so a stream's audio
//! survives it.
//!
//! Deliberately not implemented: resampling (Opus decodes at 48 kHz and
//! AAC is encoded at 48 kHz), HE-AAC/SBR, flushing the encoder's last
//! `D` samples at the end of a stream (live streams do not end cleanly), and
//! any pacing against the wall clock: the sender's RTP clock is trusted, the
//! shell compares it with arrival times.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use opus_rs::OpusDecoder;

/// Opus decodes at 48 kHz, and its RTP clock is 48 kHz for every mode
/// (RFC 7587 §4.1).
pub const SAMPLE_RATE: u32 = 48_000;

/// Samples per channel in one AAC-LC access unit (ISO/IEC 14496-3 §4.4.1,
/// GASpecificConfig frameLengthFlag = 0).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

/// Longest Opus packet: 120 ms at 48 kHz (RFC 6716 §3.2.5, requirement R5).
pub const MAX_OPUS_PACKET_SAMPLES: u32 = 5760;

/// Most packet loss concealment run for one gap: 120 ms; the rest is silence.
pub const MAX_CONCEAL_SAMPLES: u64 = 5760;

/// Shortest Opus frame, 2.5 ms (RFC 6716 §2); concealment comes in multiples.
const OPUS_MIN_FRAME_SAMPLES: u64 = 120;

/// Concealment is asked for in steps of 20 ms, the usual WebRTC packet.
const PLC_STEP_SAMPLES: u64 = 960;

/// Largest gap filled with audio (concealment, then silence): 10 s. Longer
/// gaps are a discontinuity (see the module documentation).
pub const MAX_FILL_SAMPLES: u64 = 10 * SAMPLE_RATE as u64;

/// A packet further back than this (10 s) is a sender clock restart, not a
/// late packet.
pub const MAX_BACKWARD_SAMPLES: u64 = 10 * SAMPLE_RATE as u64;

/// Encoded frames waiting for `poll_frame`: 512 frames, 10.9 s of audio.
pub const MAX_QUEUED_FRAMES: usize = 512;

/// Default AAC bitrate for stereo.
pub const DEFAULT_BITRATE: u32 = 128_000;

/// AAC bitrate per channel for the WebRTC bridge: 64 kbit/s mono, 128 stereo.
pub const BITRATE_PER_CHANNEL: u32 = 64_000;

/// Lowest accepted bitrate.
pub const MIN_BITRATE: u32 = 16_000;

/// Highest AAC-LC bitrate per channel at 48 kHz: one access unit may use at
/// most the 6144-bit decoder input buffer of each channel (ISO/IEC 14496-3),
/// 6144 bits per 1024 samples.
pub const MAX_BITRATE_PER_CHANNEL: u32 = 288_000;

/// Largest encoder delay accepted from fdk-aac (AAC-LC reports 2048).
const MAX_ENCODER_DELAY: u32 = 8 * AAC_FRAME_SAMPLES;

/// Pending `sample_pos` shifts (one per distinct AAC frame boundary still in
/// the encoder pipeline; more than a handful cannot occur).
const MAX_PENDING_SHIFTS: usize = 32;

// FLV spec v10.1 §E.4.2.1 AUDIODATA: SoundFormat 10 (AAC) in the high nibble,
// SoundRate 3 and SoundType 1, which AAC always uses, SoundSize 1 (16-bit).
/// First byte of every FLV AUDIODATA body carrying AAC.
pub const FLV_AAC_HEADER: u8 = 0xAF;
/// AACPacketType 0: AudioSpecificConfig (FLV spec v10.1 §E.4.2.2).
pub const FLV_AAC_SEQUENCE_HEADER: u8 = 0;
/// AACPacketType 1: raw AAC frame (FLV spec v10.1 §E.4.2.2).
pub const FLV_AAC_RAW: u8 = 1;

/// audioObjectType 2: AAC LC (ISO/IEC 14496-3 §1.5.1.1, Table 1.1).
const AOT_AAC_LC: u8 = 2;
/// samplingFrequencyIndex 3: 48000 Hz (ISO/IEC 14496-3 §1.6.3, the
/// samplingFrequencyIndex table).
const SF_INDEX_48000: u8 = 3;

/// Why the bridge could not be built or had to stop. Every `Err` is fatal for
/// the stream; bad Opus input is never an `Err` (it is concealed or dropped
/// and counted in [`AacStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AacError {
    /// Channel count other than 1 or 2.
    BadChannels(u8),
    /// Bitrate outside `MIN_BITRATE ..= channels * MAX_BITRATE_PER_CHANNEL`.
    BadBitrate(u32),
    /// The Opus decoder refused its configuration.
    DecoderInit,
    /// fdk-aac refused its configuration.
    EncoderInit,
    /// fdk-aac reported a codec delay above the accepted limit.
    EncoderDelay(u32),
    /// fdk-aac failed while encoding a frame.
    Encode,
    /// fdk-aac neither consumed input nor produced output.
    EncoderStalled,
}

impl fmt::Display for AacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadChannels(n) => {
                write!(f, "AAC bridge: {n} channels, only 1 or 2 are supported")
            }
            Self::BadBitrate(b) => write!(f, "AAC bridge: bitrate {b} bit/s out of range"),
            Self::DecoderInit => {
                f.write_str("AAC bridge: Opus decoder refused 48 kHz configuration")
            }
            Self::EncoderInit => {
                f.write_str("AAC bridge: fdk-aac refused AAC-LC 48 kHz configuration")
            }
            Self::EncoderDelay(d) => {
                write!(f, "AAC bridge: fdk-aac codec delay {d} samples too large")
            }
            Self::Encode => f.write_str("AAC bridge: fdk-aac failed to encode a frame"),
            Self::EncoderStalled => f.write_str("AAC bridge: fdk-aac consumed no input"),
        }
    }
}

impl std::error::Error for AacError {}

/// One encoded AAC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    /// Position of the frame's first decoded sample, in 48 kHz samples after
    /// the first packet's RTP timestamp (see the module documentation).
    pub sample_pos: u64,
    /// FLV AUDIODATA body: `0xAF 0x01` then the raw AAC access unit.
    pub flv_body: Vec<u8>,
}

/// Counters of one bridge. Sample counts are per channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AacStats {
    /// Calls to `push_opus`.
    pub packets: u64,
    /// Samples decoded from Opus packets.
    pub decoded_samples: u64,
    /// Samples produced by packet loss concealment (gaps and undecodable packets).
    pub concealed_samples: u64,
    /// Samples of silence inserted (gaps past the concealment limit).
    pub silence_samples: u64,
    /// Samples of a gap above `MAX_FILL_SAMPLES` skipped without audio.
    pub skipped_samples: u64,
    /// AAC frames queued for `poll_frame`.
    pub frames_out: u64,
    /// Encoder priming frames not emitted (decoded output before the first sample).
    pub priming_frames: u64,
    /// Oldest queued frames dropped because `MAX_QUEUED_FRAMES` were waiting.
    pub frames_overflowed: u64,
    /// Packets dropped as duplicate or too late (starting before the audio produced so far).
    pub dropped_late: u64,
    /// Packets dropped because their TOC is malformed (no duration known).
    pub dropped_malformed: u64,
    /// Packets the decoder rejected (their duration was concealed).
    pub decode_errors: u64,
    /// Decoder panics caught (the decoder was replaced, the packet concealed).
    pub decoder_panics: u64,
    /// Timeline discontinuities: gaps above `MAX_FILL_SAMPLES`, clock restarts.
    pub discontinuities: u64,
    /// Gaps filled through the next packet's in-band FEC (rebuilt where it
    /// carried LBRR, concealed otherwise; counted in `concealed_samples`).
    pub fec_gaps: u64,
    /// Losses the receiver reported with `handle_loss`.
    pub loss_reports: u64,
}

/// Duration of an Opus packet in samples at 48 kHz (RFC 6716 §3.1, §3.2),
/// or `None` if the framing is invalid: an empty packet (R1), a code 3 packet
/// without its frame count byte, with zero frames, or longer than 120 ms (R5).
/// Frame lengths are not checked; the decoder does that.
pub fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let (&toc, rest) = packet.split_first()?;
    // RFC 6716 §3.1: | config (5) | s (1) | c (2) |, Table 2 frame sizes.
    let config = toc >> 3;
    let frame: u32 = match (config, config & 3) {
        // SILK-only: 10, 20, 40, 60 ms.
        (0..=11, 0) => 480,
        (0..=11, 1) => 960,
        (0..=11, 2) => 1920,
        (0..=11, _) => 2880,
        // Hybrid: 10, 20 ms.
        (12..=15, _) => 480 << (config & 1),
        // CELT-only: 2.5, 5, 10, 20 ms.
        (_, n) => 120 << n,
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        // RFC 6716 §3.2.5: | v | p | M (6) |, M >= 1.
        _ => u32::from(rest.first()? & 0x3f),
    };
    let total = frame.checked_mul(frames)?;
    (frames >= 1 && total <= MAX_OPUS_PACKET_SAMPLES).then_some(total)
}

/// The AudioSpecificConfig of an AAC-LC, 48 kHz stream (ISO/IEC 14496-3
/// §1.6.2.1), with the GASpecificConfig of §4.4.1:
///
/// ```text
///  audioObjectType (5) | samplingFrequencyIndex (4) | channelConfiguration (4)
///  | frameLengthFlag (1) = 0 | dependsOnCoreCoder (1) = 0 | extensionFlag (1) = 0
/// ```
pub fn audio_specific_config(channels: u8) -> [u8; 2] {
    let bits: u16 = (u16::from(AOT_AAC_LC) << 11)
        | (u16::from(SF_INDEX_48000) << 7)
        | (u16::from(channels & 0x0f) << 3);
    bits.to_be_bytes()
}

/// What to ask the Opus decoder for.
#[derive(Clone, Copy)]
enum Decode<'a> {
    /// Decode this packet.
    Packet(&'a [u8]),
    /// Conceal a lost packet (PLC).
    Lost,
    /// Rebuild lost audio from the in-band FEC of this, the next packet.
    Fec(&'a [u8]),
}

/// A 48 kHz Opus decoder with `channels` outputs.
fn new_decoder(channels: u8) -> Result<OpusDecoder, AacError> {
    OpusDecoder::new(SAMPLE_RATE as i32, usize::from(channels)).map_err(|_| AacError::DecoderInit)
}

/// Opus → AAC-LC transcoder for one audio stream (see the module documentation).
pub struct OpusToAac {
    decoder: OpusDecoder,
    encoder: Encoder,
    channels: u8,
    /// Interleaved decoder output (floats in -1..1), room for the longest packet.
    decoded: Vec<f32>,
    /// The same as 16-bit PCM, the encoder's input format.
    pcm: Vec<i16>,
    /// Test hook: the next decode panics, as a decoder bug would.
    #[cfg(test)]
    panic_next_decode: bool,
    /// Interleaved PCM waiting for a full AAC frame.
    fifo: Vec<i16>,
    /// Encoder output buffer (`maxOutBufBytes`).
    au_buf: Vec<u8>,
    /// Access units whose decoded output lies before the first Opus sample.
    priming_frames: u64,
    /// Access units produced by the encoder, priming included.
    units: u64,
    first_rtp: Option<u64>,
    /// RTP timestamp of the next sample to append.
    next_rtp: u64,
    /// Opus-timeline samples appended to the FIFO (priming zeros excluded).
    fed: u64,
    /// Shift of `sample_pos` from `fed` for frames being emitted now.
    shift_now: u64,
    /// Shift for samples being appended now.
    shift_fed: u64,
    /// `(fed position, shift)` changes not yet reached by the emitted frames.
    shifts: VecDeque<(u64, u64)>,
    out: VecDeque<AacFrame>,
    /// `finish` ran: the encoder has been flushed.
    finished: bool,
    stats: AacStats,
}

impl fmt::Debug for OpusToAac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpusToAac")
            .field("channels", &self.channels)
            .field("first_rtp", &self.first_rtp)
            .field("next_rtp", &self.next_rtp)
            .field("queued", &self.out.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl OpusToAac {
    /// A bridge decoding Opus to `channels` (1 or 2) and encoding AAC-LC at
    /// 48 kHz, `bitrate` bit/s CBR ([`DEFAULT_BITRATE`] suits stereo).
    /// Opus's rtpmap always says 2 channels; what the sender encodes is in the
    /// fmtp (`sprop-stereo`), and a stereo packet into a mono bridge is downmixed.
    pub fn new(channels: u8, bitrate: u32) -> Result<Self, AacError> {
        let mode = match channels {
            1 => ChannelMode::Mono,
            2 => ChannelMode::Stereo,
            n => return Err(AacError::BadChannels(n)),
        };
        let max_rate = MAX_BITRATE_PER_CHANNEL.saturating_mul(u32::from(channels));
        if !(MIN_BITRATE..=max_rate).contains(&bitrate) {
            return Err(AacError::BadBitrate(bitrate));
        }
        let decoder = new_decoder(channels)?;
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate),
            sample_rate: SAMPLE_RATE,
            transport: Transport::Raw,
            channels: mode,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|_| AacError::EncoderInit)?;
        let info = encoder.info().map_err(|_| AacError::EncoderInit)?;
        let delay = info.nDelay;
        if delay > MAX_ENCODER_DELAY {
            return Err(AacError::EncoderDelay(delay));
        }
        // P zeros ahead of the first sample make P + D a whole number of frames.
        let preroll = (AAC_FRAME_SAMPLES - delay % AAC_FRAME_SAMPLES) % AAC_FRAME_SAMPLES;
        let priming_frames = u64::from((preroll + delay) / AAC_FRAME_SAMPLES);
        let ch = usize::from(channels);
        let frame_len = AAC_FRAME_SAMPLES as usize * ch;
        let mut fifo = Vec::with_capacity(frame_len + MAX_OPUS_PACKET_SAMPLES as usize * ch);
        fifo.resize(preroll as usize * ch, 0);
        // 768 bytes (6144 bits) per channel is the most one access unit holds.
        let au_len = usize::try_from(info.maxOutBufBytes)
            .unwrap_or(0)
            .max(768 * ch);
        Ok(Self {
            decoder,
            encoder,
            channels,
            decoded: vec![0.0; MAX_OPUS_PACKET_SAMPLES as usize * ch],
            pcm: vec![0; MAX_OPUS_PACKET_SAMPLES as usize * ch],
            #[cfg(test)]
            panic_next_decode: false,
            fifo,
            au_buf: vec![0; au_len],
            priming_frames,
            units: 0,
            first_rtp: None,
            next_rtp: 0,
            fed: 0,
            shift_now: 0,
            shift_fed: 0,
            shifts: VecDeque::new(),
            out: VecDeque::new(),
            finished: false,
            stats: AacStats::default(),
        })
    }

    /// FLV AUDIODATA body of the AAC sequence header: `0xAF 0x00` and the
    /// AudioSpecificConfig (AAC-LC, 48 kHz, this bridge's channel count).
    pub fn flv_sequence_header(&self) -> Vec<u8> {
        let asc = audio_specific_config(self.channels);
        let mut body = Vec::with_capacity(2 + asc.len());
        body.push(FLV_AAC_HEADER);
        body.push(FLV_AAC_SEQUENCE_HEADER);
        body.extend_from_slice(&asc);
        body
    }

    /// Feed one Opus packet with its extended RTP timestamp (48 kHz). Fills
    /// any gap before it, decodes it (or conceals it if it cannot be decoded)
    /// and encodes every complete AAC frame. Late, duplicate and malformed
    /// packets are dropped and counted. `Err` only when the encoder fails.
    pub fn push_opus(&mut self, rtp_ts: u64, packet: &[u8]) -> Result<(), AacError> {
        self.stats.packets += 1;
        let Some(duration) = opus_packet_samples(packet) else {
            self.stats.dropped_malformed += 1;
            return Ok(());
        };
        if self.first_rtp.is_none() {
            self.first_rtp = Some(rtp_ts);
            self.next_rtp = rtp_ts;
        }
        if rtp_ts < self.next_rtp {
            if self.next_rtp - rtp_ts <= MAX_BACKWARD_SAMPLES {
                self.stats.dropped_late += 1;
                return Ok(());
            }
            // The sender restarted its clock: continue the timeline from here.
            self.stats.discontinuities += 1;
            self.next_rtp = rtp_ts;
        }
        let gap = rtp_ts - self.next_rtp;
        if gap > 0 {
            self.fill_gap(gap, packet)?;
        }
        match self.decode(Decode::Packet(packet), MAX_OPUS_PACKET_SAMPLES as usize) {
            Some(n) => {
                self.stats.decoded_samples += n as u64;
                self.append_decoded(n, false)?;
            }
            None => {
                self.stats.decode_errors += 1;
                self.conceal(u64::from(duration), false)?;
            }
        }
        Ok(())
    }

    /// The receiver saw packets lost before the next one. Counted only: the
    /// next packet's RTP timestamp tells exactly how much to conceal, and a
    /// gap is concealed the same way whether it is loss or DTX (libopus
    /// conceals DTX gaps with the same call).
    pub fn handle_loss(&mut self) {
        self.stats.loss_reports += 1;
    }

    /// The stream ended: push the samples still inside the encoder (its codec delay and
    /// the partial last frame) out with silence, so the last access units cover the
    /// last decoded sample. Frames made only of that silence are not emitted. Call once;
    /// later calls do nothing.
    pub fn finish(&mut self) -> Result<(), AacError> {
        if self.first_rtp.is_none() || self.finished {
            return Ok(());
        }
        self.finished = true;
        let frame = u64::from(AAC_FRAME_SAMPLES);
        // Frames that must come out: every frame holding a real sample.
        let needed = self.fed.div_ceil(frame);
        let emitted = |s: &Self| s.units.saturating_sub(s.priming_frames);
        // The encoder holds at most its delay plus one frame: bounded by that.
        let max_rounds = u64::from(MAX_ENCODER_DELAY) / frame + 2;
        let mut rounds = 0;
        while emitted(self) < needed && rounds < max_rounds {
            rounds += 1;
            let before = self.out.len();
            self.append_silence(frame)?;
            // Frames beyond `needed` are pure padding: keep only what was needed.
            let extra = emitted(self).saturating_sub(needed) as usize;
            for _ in 0..extra.min(self.out.len().saturating_sub(before)) {
                self.out.pop_back();
                self.stats.frames_out = self.stats.frames_out.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Next encoded frame, oldest first.
    pub fn poll_frame(&mut self) -> Option<AacFrame> {
        self.out.pop_front()
    }

    /// RTP timestamp of the first packet accepted (the origin of `sample_pos`).
    pub fn first_rtp_ts(&self) -> Option<u64> {
        self.first_rtp
    }

    /// Channels decoded and encoded (1 or 2).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Counters.
    pub fn stats(&self) -> &AacStats {
        &self.stats
    }

    /// Fill `gap` samples before the next packet: concealment up to
    /// `MAX_CONCEAL_SAMPLES`, then silence; above `MAX_FILL_SAMPLES`,
    /// silence only to the next frame boundary and the rest skipped.
    fn fill_gap(&mut self, gap: u64, next: &[u8]) -> Result<(), AacError> {
        if gap <= MAX_CONCEAL_SAMPLES && gap.is_multiple_of(OPUS_MIN_FRAME_SAMPLES) {
            return self.recover(gap, next);
        }
        if gap <= MAX_FILL_SAMPLES {
            return self.conceal(gap, false);
        }
        self.stats.discontinuities += 1;
        let concealed = gap.min(MAX_CONCEAL_SAMPLES);
        self.conceal(concealed, true)?;
        let frame = u64::from(AAC_FRAME_SAMPLES);
        let pad = (frame - self.fed % frame) % frame;
        self.append_silence(pad)?;
        let skip = gap - concealed - pad;
        self.stats.skipped_samples += skip;
        self.next_rtp = self.next_rtp.saturating_add(skip);
        self.shift_fed = self.shift_fed.saturating_add(skip);
        // Frames from `fed` on carry the new shift. Two skips at the same
        // boundary merge; past MAX_PENDING_SHIFTS (not reachable: each entry
        // is a distinct frame boundary still in the pipeline) the last merges.
        let full = self.shifts.len() >= MAX_PENDING_SHIFTS;
        match self.shifts.back_mut() {
            Some(last) if last.0 == self.fed || full => last.1 = self.shift_fed,
            _ => self.shifts.push_back((self.fed, self.shift_fed)),
        }
        Ok(())
    }

    /// Fill a gap of `gap` samples (a multiple of 2.5 ms, at most 120 ms)
    /// with the in-band FEC of `next`, the packet after it: the decoder
    /// rebuilds the last lost frame from the LBRR data that SILK and hybrid
    /// packets carry when the sender enables it (`useinbandfec=1`, RFC 7587
    /// §6.1; browsers do by default) and conceals the rest; without LBRR
    /// (CELT packets, DTX gaps, FEC off) it conceals the whole gap.
    fn recover(&mut self, gap: u64, next: &[u8]) -> Result<(), AacError> {
        // gap <= MAX_CONCEAL_SAMPLES, so it fits a usize.
        let Some(n) = self.decode(Decode::Fec(next), gap as usize) else {
            return self.conceal(gap, false);
        };
        let take = (n as u64).min(gap);
        self.stats.fec_gaps += 1;
        self.stats.concealed_samples += take;
        self.append_decoded(take as usize, false)?;
        self.conceal(gap - take, false)
    }

    /// Conceal `samples` with the decoder's PLC (at most
    /// `MAX_CONCEAL_SAMPLES`), then silence for the rest. The last concealed
    /// chunk fades out when silence follows, here or (`then_silence`) in the
    /// caller, so concealment does not end in a click.
    fn conceal(&mut self, samples: u64, then_silence: bool) -> Result<(), AacError> {
        let mut plc_left = samples.min(MAX_CONCEAL_SAMPLES);
        let silence = samples - plc_left;
        while plc_left > 0 {
            // The decoder conceals whole multiples of 2.5 ms (RFC 6716 §2:
            // the shortest Opus frame); conceal in steps of at most 20 ms.
            let want = plc_left.min(PLC_STEP_SAMPLES);
            let request = want.div_ceil(OPUS_MIN_FRAME_SAMPLES) * OPUS_MIN_FRAME_SAMPLES;
            let n = match self.decode(Decode::Lost, request as usize) {
                Some(n) if n > 0 => n as u64,
                _ => break,
            };
            let take = n.min(want);
            plc_left -= take;
            self.stats.concealed_samples += take;
            let fade_out = plc_left == 0 && (silence > 0 || then_silence);
            // take <= n <= MAX_OPUS_PACKET_SAMPLES, so it fits a usize.
            self.append_decoded(take as usize, fade_out)?;
        }
        self.append_silence(plc_left + silence)
    }

    /// Decode into `self.pcm` (for `Lost` and `Fec`, exactly `max_samples`,
    /// a multiple of 2.5 ms); the samples per channel, or `None` on any
    /// decoder failure or panic.
    fn decode(&mut self, what: Decode<'_>, max_samples: usize) -> Option<usize> {
        let decoder = &mut self.decoder;
        let decoded = &mut self.decoded;
        #[cfg(test)]
        let panic_now = std::mem::take(&mut self.panic_next_decode);
        let result = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            assert!(!panic_now, "test hook: decoder panic");
            match what {
                Decode::Packet(packet) => decoder.decode(packet, max_samples, decoded),
                Decode::Lost => decoder.decode(&[], max_samples, decoded),
                Decode::Fec(next) => decoder.decode_fec(next, max_samples, decoded),
            }
        }));
        let n = match result {
            Ok(Ok(n)) if n <= max_samples => n,
            Ok(_) => return None,
            Err(_) => {
                self.stats.decoder_panics += 1;
                // Its state may be half-updated: start afresh.
                if let Ok(fresh) = new_decoder(self.channels) {
                    self.decoder = fresh;
                }
                return None;
            }
        };
        let len = n * usize::from(self.channels);
        let (Some(from), Some(to)) = (self.decoded.get(..len), self.pcm.get_mut(..len)) else {
            return None;
        };
        for (dst, &src) in to.iter_mut().zip(from) {
            // Float to 16-bit PCM; `as` saturates (and maps NaN to 0).
            *dst = (src * 32768.0).round() as i16;
        }
        Some(n)
    }

    /// Append the first `n` samples per channel of `self.pcm`, faded out to
    /// zero when `fade` is set, and encode what is complete.
    fn append_decoded(&mut self, n: usize, fade: bool) -> Result<(), AacError> {
        let ch = usize::from(self.channels);
        let Some(samples) = self.pcm.get_mut(..n * ch) else {
            return Ok(());
        };
        if fade && n > 0 {
            let len = n as f32;
            for (i, frame) in samples.chunks_exact_mut(ch).enumerate() {
                let gain = 1.0 - i as f32 / len;
                for s in frame {
                    *s = (f32::from(*s) * gain) as i16;
                }
            }
        }
        self.fifo.extend_from_slice(samples);
        self.advance(n as u64);
        self.encode_ready()
    }

    /// Append `samples` of silence, one AAC frame at a time.
    fn append_silence(&mut self, mut samples: u64) -> Result<(), AacError> {
        let ch = usize::from(self.channels);
        self.stats.silence_samples += samples;
        while samples > 0 {
            let n = samples.min(u64::from(AAC_FRAME_SAMPLES));
            samples -= n;
            // n <= 1024.
            self.fifo.resize(self.fifo.len() + n as usize * ch, 0);
            self.advance(n);
            self.encode_ready()?;
        }
        Ok(())
    }

    fn advance(&mut self, n: u64) {
        self.fed = self.fed.saturating_add(n);
        self.next_rtp = self.next_rtp.saturating_add(n);
    }

    /// Encode every complete AAC frame in the FIFO.
    fn encode_ready(&mut self) -> Result<(), AacError> {
        let frame_len = AAC_FRAME_SAMPLES as usize * usize::from(self.channels);
        while self.fifo.len() >= frame_len {
            let input = self.fifo.get(..frame_len).unwrap_or_default();
            let info = self
                .encoder
                .encode(input, &mut self.au_buf)
                .map_err(|_| AacError::Encode)?;
            let consumed = info.input_consumed.min(frame_len);
            if consumed == 0 && info.output_size == 0 {
                return Err(AacError::EncoderStalled);
            }
            self.fifo.drain(..consumed);
            if info.output_size > 0 {
                self.emit(info.output_size);
            }
        }
        Ok(())
    }

    /// Queue the access unit in `au_buf[..len]` as an FLV body, unless it is
    /// a priming unit.
    fn emit(&mut self, len: usize) {
        let index = self.units;
        self.units += 1;
        let Some(m) = index.checked_sub(self.priming_frames) else {
            self.stats.priming_frames += 1;
            return;
        };
        let Some(au) = self.au_buf.get(..len) else {
            return;
        };
        let start = m.saturating_mul(u64::from(AAC_FRAME_SAMPLES));
        while let Some(&(at, shift)) = self.shifts.front() {
            if at > start {
                break;
            }
            self.shift_now = shift;
            self.shifts.pop_front();
        }
        let mut flv_body = Vec::with_capacity(2 + au.len());
        flv_body.push(FLV_AAC_HEADER);
        flv_body.push(FLV_AAC_RAW);
        flv_body.extend_from_slice(au);
        if self.out.len() >= MAX_QUEUED_FRAMES {
            self.out.pop_front();
            self.stats.frames_overflowed += 1;
        }
        self.out.push_back(AacFrame {
            sample_pos: start.saturating_add(self.shift_now),
            flv_body,
        });
        self.stats.frames_out += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Opus packets made with ffmpeg's libopus encoder from a 1 kHz sine at
    /// 48 kHz, 20 ms frames, taken out of the Ogg pages (RFC 7845): not
    /// normative vectors, real encoder output for the decoder to chew on.
    mod vectors {
        // ffmpeg -f lavfi -i sine=frequency=1000:sample_rate=48000 -t 0.3 -ac 2
        //   -c:a libopus -b:a 48k -application audio -frame_duration 20 -f ogg
        // TOC 0x7c: config 15 (hybrid fullband 20 ms), stereo, code 0.
        pub const HYBRID_STEREO: [&str; 16] = [
            concat!(
                "7c87fcbf70e25d5974d05da006feccee3db40df790a1cef777aacccd64693febd8ec94c919255957",
                "1ee1aeaeb4f12833113b7b4cc3dc563c9497f3cad4e1e50d6ea93eecf41c6ae6576bdce130b26790",
                "fd466baae1d539f9e3d614b0a5dbfd85215c968a38dac23db012",
            ),
            concat!(
                "7c87fed9f78468a72b3e7ed613f0c9df00873106843aa365ba5dac20a17369309cfa3f68e5634f68",
                "2c9446f2a94c6edbdb340a3c0ef6093569beaf0aaf60d9b296365408859031986f494d7dc39ede81",
                "5451328e1ab177240a",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea0ebaae6dffe4a5fb7bece18c4d293a2621230c52d23daeb9687fe9e1",
                "478e2ed99eed0cdd4ad3a249728e2e4169d391aeaaa5c9c614ba613291b928b60895afb873dbc017",
                "e899476d6117012f",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea8ff94f9a3fe908ed6e1acac016817f90b8c8df33219c3b9873dd9ae8",
                "10a7341c62a6eb3f924b944db7300c49be771f6acc276544c5c2a7645dc2d9ed2ac6cc35f70e7f1e",
                "815451328e1ab177012f",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea9002390ca76a7c6245743a29d1f286e7025335c2da2d767d86d9153a",
                "de2d676577a0a3a9349b141a49a738ea6b7635b5a2b372e84f6cf283f1d303709509b30d7dc39fc7",
                "802fd1328e1ab177012f",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea8ffdc607240d4919ae3a6dacc16243e5129d6d8a064ee219620e33ad",
                "239c34729dadd824ba0b135023d905f8e44c7c32200a19b362fe19db7d4a9aeb45cd46cc35f70e7f",
                "1e815451328e1ab17701bf",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea8ffdc62ab7d9031398e7485114c8c6f21cbd42409a4da5cbe1675a75",
                "47092138d8d9ab859dc30563bdbdaf1a1dad7e1d910632da02fd630470a2930101270895afb873db",
                "c017e899476d6114012f",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea8ffcdf92a42a06e38a4c4fe46bc17e5fe283e157947fcab1d1b69ce8",
                "8bded263e4a2232f08ce2a43efee50a80091512b78f3c4034d3d74ec2cd5f906cc35f70e7f1e8154",
                "51328e1ab177012f",
            ),
            concat!(
                "7c8802613a4fca1e6cc1feea8ffdc2888aa9f7496a50dca7626877087d8bbcad51fffca8a773e16b",
                "d4a0ebfe1bdc417b8664a36d307394085489c993ca67d0cb43c9201280096ac20895afb873dbc017",
                "e899476d6117012f",
            ),
            concat!(
                "4c8802601d040a1e6cc1feea8ff4e6550216ec118bdd84a31c2536c986689ab8354c78274b677445",
                "b642c13a1999b3a672320d44b8ccf99ca349a019b25d54f0db1d",
            ),
            concat!(
                "4c8802601d040a1e6cc1feea8ffdcb15c1fb38682ed85d55d255ab7834d371f895dbc14692b7d19d",
                "1814b9ee7390ed1f3f10a9c9ff5064837734602cc9",
            ),
            concat!(
                "4c8802601d040a1e6cc1feea90023e0e17016d088574e2faab8c2492c146a8e1c2347796335afe91",
                "0fdec1dbe04f98e88ef955cc37e77ee63a7800ed7d",
            ),
            concat!(
                "4c8802601d040a1e6cc1feea90023e0dc927285d98c96d310f1ec43efaa1fb47d8a522013bb1969e",
                "108bf3d5f2a3aa47e5270685cdfaf6b7b57998324b10",
            ),
            concat!(
                "4c8802601d040a1e6cc1feea8ff4e654b88723780db47b682218b929cf1d2e36a59f76a7f0f20e0a",
                "4c94c93df7cf4fe57cd906a7f5ab5219c4378df7ad",
            ),
            concat!(
                "4c8802601d040a1e6cc1feea8ff958b3a818d035a14b3e3598966c0c06af1b7a38ea2ee7b24aadf5",
                "4b6f1b40388ffcc72f15743db07cf16bcdc7a0",
            ),
            concat!(
                "4c8801be0f47c60751de4c67a711c91639a936f5aac39c6711684550ec076f5230e489984606acbd",
                "f481fef2ceb58e09c7d3759805",
            ),
        ];
        // Same, -b:a 64k (first 6 packets). TOC 0xfc: config 31 (CELT
        // fullband 20 ms), stereo, code 0.
        pub const CELT_STEREO: [&str; 6] = [
            concat!(
                "fc9ee783b9b05527fcfedce074714627b721edd9a76f748d2e417d4f96392934928a2a3f726cf09a",
                "bb7be3cf50b97999d29770b3d991f1c231cae73b333e8a46f6d81a528fdc020d5f3b694f927dd805",
                "f814036f76d63ecd7bf01c3ca2e09c91fccd09c2022e1171804b3ed840198271dcc3987b4ed7bf4d",
                "ce863f8aa5a676abc9476810c3face94fa69a248519e02693c19deb12f11bf707bda6dbfdf0833fc",
                "1662dc58910e7d10f5e98f4fc4b09e17ab7a6f5489750b3a3b9c27efab1686201171fce290cae2d8",
                "db840c15448d2c5a88be67e9bf558abf40529f706b519b63a1df040b8e10ac2f349aaf0d73838764",
                "5970e39f15024ac827fac1b3b6e6c55404611f505aa8dbee6ef4bff27f2646fffc9fafaaaffffd5b",
                "b1",
            ),
            concat!(
                "fc9e8e9705374fbfa0b6fd2524f3055c2253f568aafd969966cf246b864a24407101881881881875",
                "8d94ed52d5d7298bf6121735bfc7b95edf4e7fc70ea85c8351f2700ae1b70411c6cf3811040dc4ed",
                "acd1452e8b08d2d0b58f5432456a886fcf8d4108fe966d4fd3b4eea99e85a4be4594062d21898cc8",
                "5a86b838810256cd2e713fd0f5e2f67f6dd6d08d61ead39d8d76fc686fb30577b62fe42fac5c83ff",
                "3527f830a34ac5caa023eee64980d7dc38f35b7509549622e1ccb0edbab44b8cb5f98feddeab317f",
                "8f571778cbbbce9730abc6ae51f1ffd8cb40feb4e37035dbc40a31f0ebdf8001cfb4ef012269bf55",
                "5a527fea88aef39211b0d1",
            ),
            concat!(
                "fc9cf1116772a3efebba5413668cd7bcb8ca47fb44dddb18d583cf06a72beabeabeabe742b2cd9ef",
                "14d4a8882e78560a6599e8335eebf223377e8068fa8f510d7971fa09cede5b7b220fe1f1d7e49160",
                "81953c9d669acdeb608c4384cd9308fdde2a5d2080bb94c717dc5b32bc466bd7bd5360ced29ab10d",
                "3e687407f12f0e5d33775620212b72bfa12e958813c7694ea89d40d993251d319cb0c1d3c67da8e6",
                "42c8f691cc9301afb871e575d42552588fc732c3b6ead12e32d7e4f28c019d5670578b99074abb51",
                "9e1227de3336170e37865e72d4399b4366d838691a67ac49df803de8a4070006d52a0050025dd559",
                "9dc63ef525d1",
            ),
            concat!(
                "fca9227e01f48dbd324e0858cff6ba1604f9c039c154a66faf34710167d87bebbebbebbeaae25fd2",
                "cd90a3fab97c2c9a2c57a53a45dc3a680d9e33315fe0d4acfae0320c9d56a87e38fae0e415e6e83f",
                "c7cb0fa5e9d5be51d005b6b73ecfe0ed3de4419f5463a9c60e15f4e44bdc42fdf351cac465f26713",
                "f5e181b4d6c720812d654706ecbdf74336c736da6dc64212d0d077bc078761030e217f4b95640d3d",
                "bc3265e478c76576f2e1824047e5904c8433caa0bc885b401dd15a403906e525e782edc8f1e3a72f",
                "de33356323a428c8465a033686cdb070d6fd4f4893be0073c85ebc0264ab7fc1540933cc557739fd",
                "e775d1",
            ),
            concat!(
                "fca9227e01f48dbd324e0858cffb715a73ce4ed6c40a8f05900adcd1d055b07d7657657657652500",
                "e4148da09898c8d32c4438bcd5698264402bee125ae29e4bd4139bb4a71d582a5c670ea9d036ebf8",
                "e226c582fca485f3c3f751da188af57cabd8d7cc5e6635d18e70474455ea395fa0ebbb7c38bf5fb3",
                "2e0cb8627e2ce938a47043d1a28247d69cd4d22e2c18d34c876096b6fd5e8bd667bb08719b0e9b8b",
                "40257324c06bee1cd07483aa92c47ea89759b08111e1dc1d3f5301b4201c822f9944d15ecddbfddb",
                "a72fde3338e9158c28c8465a033686cdb070d234cf5893bf007be2f50d24adad83c1541244bb5588",
                "31bde775d1",
            ),
            concat!(
                "fcfe7728a9f48dbd324e0858cffb715a73ce4ed6c40a8f05900adcd89a2ad83ebb2bb2bb2bb29280",
                "7175d852fef52c1945953bf95d287d39c769927b258299e48bc9a468e14c72de0eaa1943f492a60b",
                "a06ca60731f294dafd31b0b10308ac0a37991f86852c789e0cfed09261e49dff2b769cce4bf36280",
                "ee1a537261501064670a96a9609190c3568288eca5e0c4d138ca862cd801d497c7319aeb00ac99fa",
                "8e9ca30a94a8d9c623862be66b11f1ab55da20d60399770e319c92f3f49866a870207ad356ba11ef",
                "99469ad27304887c339926035f70e2bd3e17457badc6ef332ad5496223b6be7f274298a25a79a73c",
                "d5f7ad756eb86e731c2629764553ec5e64e055f6c5b63a87bf9a34ddcb6c2edc5d31f7484dec4309",
                "8037c9bf0f1331b9f34bd624efc01ef376439d552da4d80fc05502529bdd8c840c6f79ef5d91",
            ),
        ];
        // -ac 1 -b:a 28k -cutoff 8000 -application voip -fec 1
        // -packet_loss 20: in-band FEC (LBRR) from the second packet on.
        // TOC 0x48: config 9 (SILK wideband 20 ms), mono, code 0.
        pub const SILK_MONO: [&str; 16] = [
            concat!(
                "48820052818e6db23c24d820c2257258faa81f08e831b79ec13e71cd1eafcbb725b828db71298201",
                "516e36aacb29eddec461476aa941524abb4c7e20993ab9e4e597cd683ac4dd38404554b10ddbd742",
                "f7c750f85780afb155342e40",
            ),
            concat!(
                "48c33e1985dff9dd2477bbb05a1aa856f83ad7a73768fe512af9eb7af655e0e79135adc109877a0e",
                "969c7d7f15ee389b5e2c782177942a798f596bc8bcf7d3877d8bb9a23e21919253aa732d359a24a9",
                "5ceb69ef1016248f75e8",
            ),
            concat!(
                "48deb228cd9af41f6267a262087a2593648e952b1987d7f76f53ccb7b55cfd98dc3d4903ff5fe9bc",
                "574f684b1d791796a94ad28ef362265c8a81f360a96ed4c765ef44f3fe73907ccb25d01c4788c1ea",
                "229787b1d47fa9b7580d38",
            ),
            concat!(
                "48deb228cd9af41f62679c21524b8dab82ed6c278c5a740839ccdd09ff8b0a5de96294a0ec9ed14c",
                "b472cccffcbd4f62aa351f934835b5abc528d85f90807a721613aa8d99142c73c481ffe4f741b948",
                "26b6c9b2311bc40ba992",
            ),
            concat!(
                "48deb228cd9af41f62679f254c453a5e10c3b8d74c47cb65c860f8199cae01c662e17d5356649904",
                "fdf1be93b99633fd636992d5b200c83ba02f249e1ed05d3f177de867a460295ebeb7c4a94574d2fd",
                "723ecc0acbe7ff7f48a80e",
            ),
            concat!(
                "48deb228cd9af41f62679f254c529cce2e96447d1e716ed0abafbcaa213c08f383094ac84bc6ff87",
                "2c4cc9534e2b1f500aff76846f4b4f0e5b8f42e2312ca01979d7065987262c0ec57e17ff9b1fda50",
                "e1007c27e02ff9976054",
            ),
            concat!(
                "48deb228cd9af41f6267a25fba073903ad858d637ab19c0e85354d657ce417a64b3cc61032feb4fd",
                "81fa669395c0cdaeb52bf82711fc6d3990b9c8278ee10988341a5034154f98d08774bdc08ecfe666",
                "a99d1462c5dbcc13cc",
            ),
            concat!(
                "48deb228cd9af41f62679be893f3b70e114f098bba50f4be03ec2c2bed02671b39778a63198c216f",
                "cfc5c24bfd99041d4ffa4d042f1e0ee8da0b6e160e0238b9d639c9ceac9ee45dad64a8fcc64bc370",
                "4b13d587ce01edf7d0",
            ),
            concat!(
                "48dffa88cd9af41f6267a59c76072ab5ddfce4e5845cc6ba8d8a39e5b283bba2e15ad9533cdb4729",
                "8284c4e726f33c59533e6d671df65c8f833e7bb036240960918505056d27845febf05fe6b1711e08",
                "d6834a226940",
            ),
            concat!(
                "48dffa88cd9af41f62679f20169e2d7dd4591478fc3f4fd130fa4859d2b252b1c97f2787fa9cf3ff",
                "958c3c6105baf5df21b23b1da4598306f300557565eab90b22b562e14544d26b186f4ed09e4a6fda",
                "490062c0d0",
            ),
            concat!(
                "48deb228cd9af41f6267a59ec36f3229398aa4b7c20cca005a1ffae5c2b6a5df98b44715a74cd330",
                "a1d37446dfc0acb3fe82562ce9c291af30a4320dd373954ff53e4255686c324893c56eba120180ae",
                "eef2a575bc",
            ),
            concat!(
                "48e142e8cd9af41f62679be3599de66e9c65df0fbf504f07cd1d2434fb37132e03e2151eb28afcf4",
                "3ef4175fb9763428b2279b05a62cad92d6787483caa03a89054ced7955c3be7649c32b2994960577",
                "5a67028af72f60",
            ),
            concat!(
                "48deb228cd9af41f62679b7497a56127c8b79e6c90be5f5bbdaf8aef2d130ab77e46fdad324f74d2",
                "8aea825a9ab654c0802592eda95088cd743cd32aba30ad51f05612e686a8cd129c9923076b213982",
                "a1c6917d85a9d1a7",
            ),
            concat!(
                "48deb228cd9af41f62679f23008672973da1a4cfcac5f6c208adfebdda669e8c7be282f16ba12269",
                "2fb97d742f1a2dad0fd0f120efc56e8db631158aa124afe8ead77cdc22335bfbb759c25244822ae9",
                "365e2370ab40",
            ),
            concat!(
                "48e142e8cd9af41f6267a52a0877b0e1a22628f2d2f1e54893e8882bd961f17c67bdfb84dfa079e5",
                "63006b4064253edf6ec57708a88d7ee69d91be323e9a7c1b87bd7edcce0b662e75db735b32186a0d",
                "60",
            ),
            concat!(
                "48deb228cd9af41f62679f254b4b80a9a37310613e24993ea220803d29139bca081a01980f40e8b0",
                "c0d213319ece509518c87911a14ffae03ac57e0adfcd1010",
            ),
        ];
        // Found by feeding random CELT packets to the `opus-decoder` crate
        // 0.1.1, which panics on it with overflow checks on ("attempt to
        // shift left with overflow" in its CELT collapse mask): config 27
        // (CELT super-wideband 20 ms), mono, code 0.
        pub const DECODER_PANIC: &str = "d88a4b2561c3861551015bc1d45f57316bd90878";
    }

    const PACKET: u64 = 960;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn packets(set: &[&str]) -> Vec<Vec<u8>> {
        set.iter().map(|s| hex(s)).collect()
    }

    fn bridge(channels: u8) -> OpusToAac {
        OpusToAac::new(channels, DEFAULT_BITRATE).unwrap()
    }

    /// Push packets `range` of an endless 20 ms stream (the set repeats)
    /// starting at RTP time `ts0`.
    fn feed(b: &mut OpusToAac, set: &[Vec<u8>], ts0: u64, range: std::ops::Range<u64>) {
        for k in range {
            let p = &set[k as usize % set.len()];
            b.push_opus(ts0 + k * PACKET, p).unwrap();
        }
    }

    fn drain(b: &mut OpusToAac) -> Vec<AacFrame> {
        std::iter::from_fn(|| b.poll_frame()).collect()
    }

    /// Every frame follows the previous one by exactly 1024 samples, from 0.
    fn assert_contiguous(frames: &[AacFrame]) {
        for (m, f) in frames.iter().enumerate() {
            assert_eq!(f.sample_pos, m as u64 * 1024, "frame {m}");
            assert_eq!(&f.flv_body[..2], &[0xAF, 0x01]);
            assert!(f.flv_body.len() > 2);
        }
    }

    /// Frames emitted once `fed` Opus samples went in: 2048 samples of codec
    /// delay stay in the pipeline, the rest comes out in whole frames.
    fn frames_for(fed: u64) -> u64 {
        fed.saturating_sub(2048) / 1024
    }

    /// Decode with fdk-aac's own decoder; interleaved PCM. Its output lags
    /// the encoder input by `FDK_DECODER_DELAY` more samples than ffmpeg's.
    fn fdk_decode(frames: &[AacFrame], channels: u8) -> Vec<i16> {
        let mut dec = fdk_aac::dec::Decoder::new(fdk_aac::dec::Transport::Raw);
        dec.config_raw(&audio_specific_config(channels)).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; 2048 * 8];
        for f in frames {
            let used = dec.fill(&f.flv_body[2..]).unwrap();
            assert_eq!(used, f.flv_body.len() - 2);
            dec.decode_frame(&mut buf).unwrap();
            pcm.extend_from_slice(&buf[..dec.decoded_frame_size()]);
        }
        pcm
    }

    /// fdk-aac's decoder (as the crate opens it) delays by one frame for its
    /// concealment and 15 ms (720 samples) for its limiter; measured below.
    const FDK_DECODER_DELAY: usize = 1024 + 720;

    fn channel(pcm: &[i16], channels: u8, c: usize) -> Vec<f64> {
        pcm.iter()
            .skip(c)
            .step_by(usize::from(channels))
            .map(|&s| f64::from(s))
            .collect()
    }

    /// Frequency (Hz, 10 Hz steps, 100..5000) with the most energy (Goertzel).
    fn dominant_hz(x: &[f64]) -> u32 {
        let power = |hz: u32| {
            let w = 2.0 * std::f64::consts::PI * f64::from(hz) / 48_000.0;
            let (mut s1, mut s2) = (0.0, 0.0);
            for &v in x {
                let s = v + 2.0 * w.cos() * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
        };
        (10..=500)
            .map(|k| k * 10)
            .max_by(|&a, &b| power(a).total_cmp(&power(b)))
            .unwrap()
    }

    fn rms(x: &[f64]) -> f64 {
        (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    /// ADTS stream of the frames (ISO/IEC 14496-3 §1.A.2.2), for ffmpeg.
    fn adts(frames: &[AacFrame], channels: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            let au = &f.flv_body[2..];
            let len = au.len() + 7;
            out.extend_from_slice(&[
                0xFF,
                0xF1,                                  // MPEG-4, layer 0, no CRC
                (1 << 6) | (3 << 2) | (channels >> 2), // LC, 48 kHz
                ((channels & 3) << 6) | (len >> 11) as u8,
                (len >> 3) as u8,
                ((len & 7) << 5) as u8 | 0x1F,
                0xFC,
            ]);
            out.extend_from_slice(au);
        }
        out
    }

    /// Decode with ffmpeg's AAC decoder, if ffmpeg is installed.
    fn ffmpeg_decode(frames: &[AacFrame], channels: u8, name: &str) -> Option<Vec<i16>> {
        let dir = std::env::temp_dir().join(format!("rtcbridge-aac-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.aac");
        std::fs::write(&path, adts(frames, channels)).unwrap();
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-i"])
            .arg(&path)
            .args(["-f", "s16le", "-"])
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        let out = match out {
            Ok(o) if o.status.success() => o.stdout,
            _ => {
                eprintln!("ffmpeg not available: ffmpeg cross-check skipped");
                return None;
            }
        };
        Some(
            out.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect(),
        )
    }

    #[test]
    fn toc_durations_follow_rfc6716_table_2() {
        // RFC 6716 §3.1 Table 2, frame sizes in 48 kHz samples by config.
        let sizes: [u32; 32] = [
            480, 960, 1920, 2880, 480, 960, 1920, 2880, 480, 960, 1920,
            2880, // SILK NB, MB, WB
            480, 960, 480, 960, // Hybrid SWB, FB
            120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480,
            960, // CELT
        ];
        for (config, &size) in sizes.iter().enumerate() {
            let toc = (config as u8) << 3;
            for stereo in [0u8, 4] {
                assert_eq!(
                    opus_packet_samples(&[toc | stereo]),
                    Some(size),
                    "config {config}"
                );
                assert_eq!(
                    opus_packet_samples(&[toc | stereo | 1, 0, 0]),
                    Some(2 * size)
                );
                assert_eq!(
                    opus_packet_samples(&[toc | stereo | 2, 1, 0, 0]),
                    Some(2 * size)
                );
            }
            // Code 3: M frames, at most 120 ms in total (R5), at least one.
            let max = 5760 / size;
            assert_eq!(opus_packet_samples(&[toc | 3, max as u8]), Some(5760));
            assert_eq!(
                opus_packet_samples(&[toc | 3, 0xC0 | max as u8]),
                Some(5760)
            ); // v, p flags
            assert_eq!(opus_packet_samples(&[toc | 3, max as u8 + 1]), None);
            assert_eq!(opus_packet_samples(&[toc | 3, 0]), None);
            assert_eq!(opus_packet_samples(&[toc | 3]), None);
        }
        assert_eq!(opus_packet_samples(&[]), None); // R1
        for set in [
            &vectors::HYBRID_STEREO[..],
            &vectors::CELT_STEREO,
            &vectors::SILK_MONO,
        ] {
            for p in packets(set) {
                assert_eq!(opus_packet_samples(&p), Some(960));
            }
        }
    }

    #[test]
    fn sequence_header_matches_fdk_and_iso_14496_3() {
        for (channels, asc) in [(1u8, [0x11, 0x88]), (2, [0x11, 0x90])] {
            let b = bridge(channels);
            assert_eq!(b.flv_sequence_header(), [0xAF, 0x00, asc[0], asc[1]]);
            let info = b.encoder.info().unwrap();
            assert_eq!(&info.confBuf[..info.confSize as usize], &asc);
            assert_eq!(info.nDelay, 2048);
            assert_eq!(b.priming_frames, 2);
            assert_eq!(b.fifo.len(), 0, "no preroll needed for a 2048-sample delay");
        }
    }

    #[test]
    fn finish_flushes_the_encoder_delay_and_no_more() {
        for n in [1u64, 7, 32, 51] {
            let mut b = bridge(2);
            feed(&mut b, &packets(&vectors::HYBRID_STEREO), 9_000, 0..n);
            let fed = n * PACKET;
            let mut frames = drain(&mut b);
            assert_eq!(frames.len() as u64, frames_for(fed), "{n} packets before finish");
            b.finish().unwrap();
            frames.extend(drain(&mut b));
            // Every frame that holds a real sample, and none of padding only.
            assert_eq!(frames.len() as u64, fed.div_ceil(1024), "{n} packets after finish");
            assert_contiguous(&frames);
            assert_eq!(b.stats().frames_out, frames.len() as u64);
            b.finish().unwrap();
            assert!(b.poll_frame().is_none(), "second finish emits nothing");
        }
        // Nothing fed: nothing to flush.
        let mut b = bridge(2);
        b.finish().unwrap();
        assert!(b.poll_frame().is_none());
    }

    #[test]
    fn bridge_can_move_to_its_core() {
        fn send<T: Send>() {}
        send::<OpusToAac>();
    }

    #[test]
    fn new_checks_channels_and_bitrate() {
        assert_eq!(
            OpusToAac::new(0, DEFAULT_BITRATE).unwrap_err(),
            AacError::BadChannels(0)
        );
        assert_eq!(
            OpusToAac::new(3, DEFAULT_BITRATE).unwrap_err(),
            AacError::BadChannels(3)
        );
        assert_eq!(
            OpusToAac::new(2, 15_999).unwrap_err(),
            AacError::BadBitrate(15_999)
        );
        assert_eq!(
            OpusToAac::new(1, 288_001).unwrap_err(),
            AacError::BadBitrate(288_001)
        );
        for (channels, rate) in [
            (1, 16_000),
            (1, 288_000),
            (2, 16_000),
            (2, 576_000),
            (2, 64_000),
        ] {
            let mut b = OpusToAac::new(channels, rate).unwrap();
            feed(&mut b, &packets(&vectors::HYBRID_STEREO), 0, 0..8);
            assert_eq!(drain(&mut b).len() as u64, frames_for(8 * PACKET));
        }
        assert!(AacError::BadBitrate(7).to_string().contains("bitrate 7"));
    }

    #[test]
    fn sine_through_opus_and_aac_stays_1_khz() {
        let cases: [(&[&str], u8); 4] = [
            (&vectors::HYBRID_STEREO, 2),
            (&vectors::CELT_STEREO, 2),
            (&vectors::SILK_MONO, 1),
            (&vectors::SILK_MONO, 2), // mono packets into a stereo bridge
        ];
        for (set, channels) in cases {
            let mut b = bridge(channels);
            feed(&mut b, &packets(set), 123_456, 0..32);
            let frames = drain(&mut b);
            assert_contiguous(&frames);
            assert_eq!(frames.len() as u64, frames_for(32 * PACKET));
            let pcm = fdk_decode(&frames, channels);
            for c in 0..usize::from(channels) {
                let x = channel(&pcm, channels, c);
                let steady = &x[FDK_DECODER_DELAY + 1024..];
                assert!(steady.len() >= 2048);
                assert!(
                    dominant_hz(steady).abs_diff(1000) <= 20,
                    "{} Hz",
                    dominant_hz(steady)
                );
                assert!(rms(steady) > 1000.0, "rms {}", rms(steady));
            }
        }
    }

    #[test]
    fn timeline_counts_samples_exactly() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        let n = 100;
        feed(&mut b, &set, 7, 0..n);
        let frames = drain(&mut b);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(n * PACKET));
        assert!(n * PACKET - frames.len() as u64 * 1024 < 1024 + 2048);
        let s = b.stats();
        assert_eq!(
            (s.packets, s.decoded_samples, s.frames_out, s.priming_frames),
            (n, n * PACKET, frames.len() as u64, 2)
        );
        assert_eq!(
            s.concealed_samples + s.silence_samples + s.dropped_late + s.dropped_malformed,
            0
        );
        assert_eq!(b.first_rtp_ts(), Some(7));
        assert!(b.fifo.len() < 1024 * 2);
    }

    #[test]
    fn three_lost_packets_are_concealed_exactly() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 0, 0..10);
        b.handle_loss();
        feed(&mut b, &set, 0, 13..30);
        let s = b.stats().clone();
        assert_eq!(s.concealed_samples, 3 * PACKET);
        assert_eq!(s.silence_samples, 0);
        assert_eq!(s.decoded_samples, 27 * PACKET);
        assert_eq!(s.loss_reports, 1);
        let frames = drain(&mut b);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(30 * PACKET));
        // Concealment keeps the tone going through the gap.
        let x = channel(&fdk_decode(&frames, 2), 2, 0);
        let gap = &x[FDK_DECODER_DELAY + 10 * 960..FDK_DECODER_DELAY + 13 * 960];
        assert!(rms(gap) > 300.0, "rms {}", rms(gap));
    }

    #[test]
    fn two_second_gap_is_two_seconds_of_audio() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 1000, 0..10);
        let gap = 2 * 48_000;
        feed(&mut b, &set, 1000 + gap, 10..20);
        let s = b.stats().clone();
        assert_eq!(s.concealed_samples, MAX_CONCEAL_SAMPLES);
        assert_eq!(s.concealed_samples + s.silence_samples, gap);
        assert_eq!(s.discontinuities, 0);
        let frames = drain(&mut b);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(20 * PACKET + gap));
        // After the concealment (faded out) the gap is silent.
        let x = channel(&fdk_decode(&frames, 2), 2, 0);
        let start = FDK_DECODER_DELAY + 10 * 960 + MAX_CONCEAL_SAMPLES as usize + 1024;
        let silent = &x[start..FDK_DECODER_DELAY + 10 * 960 + gap as usize - 1024];
        assert!(rms(silent) < 5.0, "rms {}", rms(silent));
        let after = &x[FDK_DECODER_DELAY + 10 * 960 + gap as usize + 1024..];
        assert!(rms(after) > 1000.0);
    }

    #[test]
    fn duplicate_and_late_packets_are_dropped() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 0, 0..5);
        feed(&mut b, &set, 0, 4..5); // duplicate
        feed(&mut b, &set, 0, 1..3); // late
        b.push_opus(4 * PACKET + 480, &set[0]).unwrap(); // overlaps the last packet
        feed(&mut b, &set, 0, 5..20);
        let s = b.stats();
        assert_eq!(s.dropped_late, 4);
        assert_eq!(s.decoded_samples, 20 * PACKET);
        assert_eq!(s.concealed_samples + s.silence_samples, 0);
        let frames = drain(&mut b);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(20 * PACKET));
    }

    #[test]
    fn huge_gap_skips_and_keeps_rtp_positions() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 50, 0..10);
        let gap = 60 * 48_000 + 123; // a minute, not a whole number of frames
        let ts = 50 + 10 * PACKET + gap;
        for k in 0..20 {
            b.push_opus(ts + k * PACKET, &set[k as usize % set.len()])
                .unwrap();
        }
        let s = b.stats().clone();
        assert_eq!(s.discontinuities, 1);
        assert_eq!(s.concealed_samples, MAX_CONCEAL_SAMPLES);
        assert_eq!(
            s.concealed_samples + s.silence_samples + s.skipped_samples,
            gap
        );
        assert!(s.silence_samples < 1024);
        let frames = drain(&mut b);
        let steps: Vec<u64> = frames
            .windows(2)
            .map(|w| w[1].sample_pos - w[0].sample_pos)
            .collect();
        assert_eq!(steps.iter().filter(|&&d| d != 1024).count(), 1, "{steps:?}");
        assert!(steps.contains(&(1024 + s.skipped_samples)));
        assert_eq!(frames[0].sample_pos, 0);
        // Every frame covers audio at RTP time first_rtp + sample_pos: the
        // last frame ends within the audio pushed, at most the codec delay
        // and one frame short of it.
        let end = frames.last().unwrap().sample_pos + 1024;
        let pushed = ts + 20 * PACKET - 50;
        assert!(
            end <= pushed && pushed - end < 2048 + 1024,
            "{end} {pushed}"
        );
    }

    #[test]
    fn clock_restart_continues_the_timeline() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 5_000_000, 0..10);
        feed(&mut b, &set, 0, 0..10); // 104 s back: the sender restarted
        let s = b.stats();
        assert_eq!(
            (s.discontinuities, s.dropped_late, s.decoded_samples),
            (1, 0, 20 * PACKET)
        );
        let frames = drain(&mut b);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(20 * PACKET));
    }

    #[test]
    fn frame_queue_is_bounded() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 0, 0..1);
        feed(&mut b, &set, MAX_FILL_SAMPLES, 1..2); // 10 s of gap: 469 frames
        feed(&mut b, &set, 2 * MAX_FILL_SAMPLES, 2..3);
        assert_eq!(b.out.len(), MAX_QUEUED_FRAMES);
        let s = b.stats();
        assert_eq!(s.frames_out - s.frames_overflowed, MAX_QUEUED_FRAMES as u64);
        assert!(s.frames_overflowed > 0);
        assert_eq!(s.discontinuities, 0);
        let frames = drain(&mut b);
        let first = frames[0].sample_pos;
        for (m, f) in frames.iter().enumerate() {
            assert_eq!(f.sample_pos, first + m as u64 * 1024); // the newest kept
        }
    }

    #[test]
    fn garbage_never_panics_and_keeps_the_timeline() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        let mut ts = 0;
        let mut frames = Vec::new();
        let mut push = |b: &mut OpusToAac, p: &[u8]| {
            b.push_opus(ts, p).unwrap();
            ts += opus_packet_samples(p).map_or(0, u64::from);
            frames.extend(drain(b));
        };
        push(&mut b, &set[0]);
        push(&mut b, &[]);
        for p in set
            .iter()
            .take(2)
            .chain(packets(&vectors::SILK_MONO).iter().take(1))
        {
            for len in 1..p.len() {
                push(&mut b, &p[..len]);
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % 200) as usize;
            let p: Vec<u8> = (0..len)
                .map(|k| (seed >> (k % 57)) as u8 ^ k as u8)
                .collect();
            push(&mut b, &p);
            if i % 50 == 0 {
                push(&mut b, &set[i % set.len()]);
            }
        }
        // Every packet with a valid TOC advanced the timeline by its
        // duration, decoded or concealed; the others were dropped.
        let s = b.stats().clone();
        assert_eq!(s.dropped_late, 0);
        assert!(s.dropped_malformed >= 1);
        assert_eq!(
            s.decoded_samples + s.concealed_samples + s.silence_samples,
            ts
        );
        assert_eq!(b.fed, ts);
        assert!(s.decode_errors > 0);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(ts));
        eprintln!("garbage: {s:?}");
    }

    #[test]
    fn decoder_panic_is_caught_and_concealed() {
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 0, 0..5);
        b.panic_next_decode = true;
        feed(&mut b, &set, 0, 5..6);
        // A packet that once made another decoder panic, for good measure.
        b.push_opus(6 * PACKET, &hex(vectors::DECODER_PANIC))
            .unwrap();
        feed(&mut b, &set, 0, 7..20);
        let s = b.stats().clone();
        assert_eq!(s.decoder_panics, 1);
        assert!(s.decode_errors >= 1);
        // The packets' 20 ms are accounted for and decoding goes on; the
        // fresh decoder has nothing to conceal from, so that is silence.
        assert_eq!(
            s.decoded_samples + s.concealed_samples + s.silence_samples,
            20 * PACKET
        );
        let frames = drain(&mut b);
        assert_contiguous(&frames);
        assert_eq!(frames.len() as u64, frames_for(20 * PACKET));
        let x = channel(&fdk_decode(&frames, 2), 2, 0);
        let tail = &x[FDK_DECODER_DELAY + 9 * 960..];
        assert!(dominant_hz(tail).abs_diff(1000) <= 20);
    }

    #[test]
    fn lost_packet_is_rebuilt_from_in_band_fec() {
        let set = packets(&vectors::SILK_MONO);
        let n = set.len() as u64;
        let run = |lose: Option<bool>| {
            let mut b = bridge(1);
            feed(&mut b, &set, 0, 0..8);
            match lose {
                None => feed(&mut b, &set, 0, 8..9),
                Some(true) => {} // gap: FEC from packet 9
                Some(false) => b.conceal(PACKET, false).unwrap(), // plain PLC
            }
            feed(&mut b, &set, 0, 9..n);
            let frames = drain(&mut b);
            assert_contiguous(&frames);
            assert_eq!(frames.len() as u64, frames_for(n * PACKET));
            (b.stats().clone(), channel(&fdk_decode(&frames, 1), 1, 0))
        };
        let (_, reference) = run(None);
        let (fec, with_fec) = run(Some(true));
        let (plc, with_plc) = run(Some(false));
        assert_eq!(
            (fec.fec_gaps, fec.concealed_samples, fec.silence_samples),
            (1, PACKET, 0)
        );
        assert_eq!((plc.fec_gaps, plc.concealed_samples), (0, PACKET));
        let lost = FDK_DECODER_DELAY + 8 * 960..FDK_DECODER_DELAY + 9 * 960;
        let err = |x: &[f64]| {
            let d: Vec<f64> = x[lost.clone()]
                .iter()
                .zip(&reference[lost.clone()])
                .map(|(a, b)| a - b)
                .collect();
            rms(&d)
        };
        eprintln!(
            "lost 20 ms: rms error with FEC {:.1}, with PLC {:.1}, signal {:.1}",
            err(&with_fec),
            err(&with_plc),
            rms(&reference[lost.clone()])
        );
        assert!(err(&with_fec) < err(&with_plc));
    }

    /// Puts `signal` (mono, copied to every channel) on the bridge's timeline
    /// from sample 0, then silence until it all came out.
    fn pcm_through(b: &mut OpusToAac, signal: &[i16]) -> Vec<AacFrame> {
        let ch = usize::from(b.channels);
        for chunk in signal.chunks(960) {
            for (i, &v) in chunk.iter().enumerate() {
                b.pcm[i * ch..(i + 1) * ch].fill(v);
            }
            b.append_decoded(chunk.len(), false).unwrap();
        }
        b.append_silence(4096).unwrap();
        drain(b)
    }

    fn peak(x: &[f64]) -> usize {
        (0..x.len())
            .max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))
            .unwrap()
    }

    #[test]
    fn aac_output_lines_up_with_the_opus_timeline_to_the_sample() {
        // A click at sample 5000 of the timeline must decode at sample 5000.
        for channels in [1u8, 2] {
            let mut signal = vec![0i16; 12_000];
            signal[5000] = 20_000;
            let mut b = bridge(channels);
            let frames = pcm_through(&mut b, &signal);
            assert_contiguous(&frames);
            let fdk = channel(&fdk_decode(&frames, channels), channels, 0);
            assert_eq!(peak(&fdk), 5000 + FDK_DECODER_DELAY);
            if let Some(pcm) = ffmpeg_decode(&frames, channels, "click") {
                let x = channel(&pcm, channels, 0);
                assert_eq!(peak(&x), 5000, "ffmpeg sees the click where it was put");
            }
        }
    }

    #[test]
    fn cpu_cost_per_20ms_packet() {
        // Debug build: opus-rs unoptimised, fdk-aac compiled without -O.
        let set = packets(&vectors::HYBRID_STEREO);
        let mut b = bridge(2);
        feed(&mut b, &set, 0, 0..5);
        let n = 100;
        let t = crate::runtime::now();
        feed(&mut b, &set, 0, 5..5 + n);
        let per_packet = t.elapsed() / n as u32;
        let mut dec = new_decoder(2).unwrap();
        let mut pcm = vec![0.0f32; 5760 * 2];
        let t = crate::runtime::now();
        for k in 0..n {
            dec.decode(&set[k as usize % set.len()], 5760, &mut pcm)
                .unwrap();
        }
        let decode = t.elapsed() / n as u32;
        eprintln!("per 20 ms packet: {per_packet:?} in all, Opus decode {decode:?}");
        assert_eq!(drain(&mut b).len() as u64, frames_for((5 + n) * PACKET));
    }
}
