//! One WebRTC publisher session: ICE-lite, DTLS-SRTP, RTP receive (reorder,
//! NACK, RTX, loss → PLI), depacketization, and the stream timeline, turning
//! a browser's H.264 and Opus into FLV messages for the stream hub.
//!
//! Sans-IO: the worker feeds datagrams (`handle_datagram`, which says why it
//! discarded one: `RtcDrop`) and timeouts (`handle_timeout`, at `poll_timeout`)
//! with `now`, runs the Opus → AAC transcoder in its own call
//! (`handle_transcode`, so that the worker can time it), and drains datagrams
//! to send and events. The session reads no clock; why it ended is an
//! `RtcError`, which the signaling paths turn into their own words.
//!
//! Timeline: one per session, from the first media packet, using the SDP
//! clock rates (90 kHz video, 48 kHz Opus): each track is anchored once at its
//! first unit's capture time (`timeline_ms`), later units follow their RTP clock,
//! with no waiting for RTCP sender reports. The reports then refine audio against
//! video (srsync.rs: drift of the sender's audio clock, slewed in, never stepping
//! back). Audio reaches RTMP players as AAC (Opus → AAC once per stream), and as
//! Enhanced RTMP Opus to players that ask for it with `--audio opus`.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::{Audience, Frame};
use crate::proto::flv::MediaKind;
use crate::config::AudioMode;
use crate::proto::codec::aac::{opus_packet_samples, OpusToAac, BITRATE_PER_CHANNEL};
use crate::proto::depack::h264::H264Depacketizer;
use crate::proto::depack::opus::OpusDepacketizer;
use crate::proto::depack::{Pushed, RtpView};
use crate::proto::dtls::DtlsIdentity;
use crate::proto::ice::IceDrop;
use crate::proto::rtmp::{amf::Value, amf0};
use crate::proto::rtp_recv::{RecvError, RtpReceiver, TwccRecorder};
use crate::proto::sdp::{self, CodecPrefs, LocalParams, SdpAudioCodec, SdpError};
use crate::proto::srtp::SrtpError;
use crate::proto::{rtcp, rtp};
use super::rtc_transport::{Demuxed, Earliest, RtcTransport, TransportEvent, TransportParams};
use crate::relay::srsync::{self, shifted, SrSync, TrackClock};
use crate::relay::StreamStats;

/// Without RTP for this long after DTLS, the publisher is considered gone.
const RTP_INACTIVITY: Duration = Duration::from_secs(10);
/// Keyframe requests at most this often.
const PLI_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// Periodic keyframe request so the GOP cache stays fresh (PROTOCOL-NOTES: about 2 s).
const PLI_PERIODIC: Duration = Duration::from_secs(2);
const RR_INTERVAL: Duration = Duration::from_secs(1);
/// Transport-cc feedback packets sent per timeout at most; a larger backlog goes on the
/// next one (the recorder says it is due at once).
const TWCC_BURST: usize = 8;
/// Datagrams queued for sending, at most.
const MAX_TRANSMIT: usize = 256;
/// Opus packets waiting for the shell to run the transcoder (`handle_transcode`), at
/// most: one second of 20 ms packets. The shell runs it after every input, so this only
/// guards against a shell that does not; past it the oldest packet is dropped.
const MAX_TRANSCODE_BACKLOG: usize = 50;

pub use crate::proto::signaling::RtcError;

#[derive(Debug)]
pub enum RtcEvent {
    /// ICE nominated and DTLS-SRTP up: the stream is publishing.
    Connected,
    /// The session is over (failed, or the peer closed it); nothing more will come.
    Ended(RtcError),
    /// An FLV message for the stream hub.
    Media(Frame),
}

/// Why the session discarded a datagram. Never fatal: the shell counts it per reason
/// (`/metrics` `rtcbridge_webrtc_dropped_total`) and the session goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcDrop {
    /// No session owns the datagram (unknown ICE ufrag, unknown source address). Counted
    /// by the shell, which routes datagrams to sessions.
    UnknownSession,
    /// The session has ended; the datagram came before the shell removed it.
    SessionEnded,
    /// The first byte matches no protocol of RFC 7983 §7.
    NotDemuxed,
    /// STUN that does not parse (RFC 5389 §6).
    StunMalformed,
    /// STUN with a wrong FINGERPRINT (RFC 5389 §7.3), an indication, or a response
    /// (a lite agent sends no requests).
    StunBadFingerprint,
    StunIndication,
    StunResponse,
    /// DTLS or SRTP from an address that passed no ICE check (RFC 8445 §7.3 valid pairs).
    UnvalidatedSource,
    /// SRTP/SRTCP before DTLS gave the keys.
    BeforeKeys,
    /// SRTP/SRTCP whose authentication tag fails (RFC 3711 §3.3 step 5).
    SrtpAuth,
    /// SRTP/SRTCP replayed or older than the replay window (RFC 3711 §3.3.2).
    SrtpReplay,
    /// SRTP/SRTCP too short, too long or not version 2.
    SrtpMalformed,
    /// RTP whose header does not parse (RFC 3550 §5.1).
    RtpMalformed,
    /// RTP with a payload type the answer did not accept.
    RtpUnknownPayloadType,
    /// RTP already received, or arriving after it was given up as lost.
    RtpDuplicate,
    RtpLate,
    /// RTP payload over an Ethernet MTU.
    RtpTooLarge,
    /// RTP after a large sequence jump, held until the next packet confirms a restart.
    RtpSeqJump,
}

impl RtcDrop {
    /// Every reason, in `index` order.
    pub const ALL: [RtcDrop; 18] = [
        RtcDrop::UnknownSession,
        RtcDrop::SessionEnded,
        RtcDrop::NotDemuxed,
        RtcDrop::StunMalformed,
        RtcDrop::StunBadFingerprint,
        RtcDrop::StunIndication,
        RtcDrop::StunResponse,
        RtcDrop::UnvalidatedSource,
        RtcDrop::BeforeKeys,
        RtcDrop::SrtpAuth,
        RtcDrop::SrtpReplay,
        RtcDrop::SrtpMalformed,
        RtcDrop::RtpMalformed,
        RtcDrop::RtpUnknownPayloadType,
        RtcDrop::RtpDuplicate,
        RtcDrop::RtpLate,
        RtcDrop::RtpTooLarge,
        RtcDrop::RtpSeqJump,
    ];

    /// Position in [`RtcDrop::ALL`] (and in the shell's counter array).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The Prometheus `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RtcDrop::UnknownSession => "unknown_session",
            RtcDrop::SessionEnded => "session_ended",
            RtcDrop::NotDemuxed => "not_demuxed",
            RtcDrop::StunMalformed => "stun_malformed",
            RtcDrop::StunBadFingerprint => "stun_bad_fingerprint",
            RtcDrop::StunIndication => "stun_indication",
            RtcDrop::StunResponse => "stun_response",
            RtcDrop::UnvalidatedSource => "unvalidated_source",
            RtcDrop::BeforeKeys => "before_keys",
            RtcDrop::SrtpAuth => "srtp_auth",
            RtcDrop::SrtpReplay => "srtp_replay",
            RtcDrop::SrtpMalformed => "srtp_malformed",
            RtcDrop::RtpMalformed => "rtp_malformed",
            RtcDrop::RtpUnknownPayloadType => "rtp_unknown_payload_type",
            RtcDrop::RtpDuplicate => "rtp_duplicate",
            RtcDrop::RtpLate => "rtp_late",
            RtcDrop::RtpTooLarge => "rtp_too_large",
            RtcDrop::RtpSeqJump => "rtp_seq_jump",
        }
    }
}

impl From<IceDrop> for RtcDrop {
    fn from(d: IceDrop) -> Self {
        match d {
            IceDrop::BadFingerprint => RtcDrop::StunBadFingerprint,
            IceDrop::Indication => RtcDrop::StunIndication,
            IceDrop::Response => RtcDrop::StunResponse,
        }
    }
}

impl From<SrtpError> for RtcDrop {
    fn from(e: SrtpError) -> Self {
        match e {
            SrtpError::AuthFailed => RtcDrop::SrtpAuth,
            SrtpError::Replay => RtcDrop::SrtpReplay,
            _ => RtcDrop::SrtpMalformed,
        }
    }
}

impl From<RecvError> for RtcDrop {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::PayloadTooLarge { .. } => RtcDrop::RtpTooLarge,
            RecvError::Duplicate { .. } => RtcDrop::RtpDuplicate,
            RecvError::Late { .. } => RtcDrop::RtpLate,
            RecvError::SeqJump { .. } => RtcDrop::RtpSeqJump,
        }
    }
}

struct VideoTrack {
    pt: u8,
    rtx_pt: Option<u8>,
    ssrc: Option<u32>,
    recv: Option<RtpReceiver>,
    depack: H264Depacketizer,
    /// Timeline anchor: (first extended RTP ts, its timeline ms; may be below 0).
    first: Option<(u64, i64)>,
    last_ms: u32,
    sent_meta: bool,
    /// RFC 5450 transmission time offset extension id, if negotiated.
    toffset_id: Option<u8>,
    /// Send time minus capture time of the latest media packet (from toffset), ms.
    send_delay_ms: i64,
    /// Latest RTCP sender report: (NTP timestamp, RTP timestamp).
    sr: Option<(u64, u32)>,
    /// Latest extended RTP timestamp of a unit.
    last_ts: u64,
}

/// The Opus → AAC transcoder of a track, built when the first Opus packet arrives: a
/// session that never gets media (a half-open offer) never pays for it (~430 KB).
struct AacOut {
    channels: u8,
    enc: Option<Box<OpusToAac>>,
}

impl AacOut {
    /// The encoder, built on first use; None if it cannot be built.
    fn encoder(&mut self) -> Option<&mut OpusToAac> {
        if self.enc.is_none() {
            self.enc = OpusToAac::new(self.channels, BITRATE_PER_CHANNEL * u32::from(self.channels)).ok().map(Box::new);
        }
        self.enc.as_deref_mut()
    }

    /// The encoder if it was built.
    fn built(&mut self) -> Option<&mut OpusToAac> {
        self.enc.as_deref_mut()
    }
}

struct AudioTrack {
    pt: u8,
    ssrc: Option<u32>,
    clock: u32,
    recv: Option<RtpReceiver>,
    depack: OpusDepacketizer,
    /// Opus → AAC-LC, once per stream (absent with `--audio none`).
    aac: Option<AacOut>,
    /// Opus packets for `aac`, with the timeline shift (srsync.rs) in force when each
    /// arrived; transcoded when the shell calls `handle_transcode`.
    transcode: VecDeque<(u64, Vec<u8>, i64)>,
    /// Also send Enhanced RTMP Opus to players that asked for it (`--audio opus`).
    opus_out: bool,
    /// G.711 from the browser: passed through as FLV SoundFormat 7 (A-law) or 8 (µ-law),
    /// 8 kHz mono (FLV spec E.4.2.1); the value is the FLV tag's first byte.
    g711: Option<u8>,
    /// Timeline anchor: (first extended RTP ts, its timeline ms; may be below 0).
    first: Option<(u64, i64)>,
    sent_config: bool,
    last_ms: u32,
    sr: Option<(u64, u32)>,
    /// Latest extended RTP timestamp of a unit.
    last_ts: u64,
}

/// Enhanced RTMP v2 audio (SoundFormat 9, ExAudioTagHeader): packet type in
/// the low nibble, then the FourCC.
const EX_AUDIO_SEQUENCE_START: u8 = 0x90;
const EX_AUDIO_CODED_FRAMES: u8 = 0x91;
const FOURCC_OPUS: &[u8; 4] = b"Opus";

/// OpusHead identification header (RFC 7845 §5.1), the Enhanced RTMP Opus sequence start.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.push(1); // version
    h.push(channels);
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: RTP Opus carries none
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // channel mapping family 0: mono/stereo
    h
}

pub struct RtcSession {
    name: Arc<str>,
    answer: String,
    t: RtcTransport,
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    twcc: Option<(u8, TwccRecorder)>,
    local_ssrc: u32,
    first_media: Option<Instant>,
    last_rtp: Option<Instant>,
    last_pli: Option<Instant>,
    last_rr: Option<Instant>,
    events: VecDeque<RtcEvent>,
    stats: Arc<StreamStats>,
    /// Video size, once the SPS is known (for metadata).
    dims: Option<(u32, u32)>,
    /// The metadata sent so far lists audio.
    meta_has_audio: bool,
    /// Audio against video, refined by the sender's RTCP reports.
    sr_sync: SrSync,
}

/// What a session announces about itself that must be unguessable: the ICE credentials
/// (RFC 8445 §5.3: ufrag at least 24 bits, password at least 128 bits of randomness), and
/// the SDP session id and our RTCP SSRC (not secrets, but nothing that could lead to one
/// either). Drawn from the OS CSPRNG by the runtime and passed in, so the session stays
/// deterministic under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcSecrets {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub session_id: u64,
    pub ssrc: u32,
}

impl RtcSecrets {
    /// Random bytes this many long make one set of secrets.
    pub const RANDOM_BYTES: usize = 36;

    /// Spend 36 random bytes: 6 for an 8-character ufrag (48 bits), 18 for a
    /// 24-character password (144 bits), 8 for the session id, 4 for the SSRC. The
    /// characters are base64's (letters, digits, `+`, `/`): all are ice-chars
    /// (RFC 8839 §5.4), and each carries exactly 6 bits (no modulo bias).
    pub fn from_random(r: &[u8; Self::RANDOM_BYTES]) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let (ufrag, rest) = r.split_at(6);
        let (pwd, rest) = rest.split_at(18);
        let (sid, ssrc) = rest.split_at(8);
        let sid8: [u8; 8] = sid.try_into().unwrap_or_default();
        let ssrc4: [u8; 4] = ssrc.try_into().unwrap_or_default();
        RtcSecrets {
            ice_ufrag: b64.encode(ufrag),
            ice_pwd: b64.encode(pwd),
            // RFC 8866 §5.2: a numeric session id; keep it positive as a signed 64-bit value.
            session_id: u64::from_be_bytes(sid8) >> 1,
            ssrc: u32::from_be_bytes(ssrc4) | 1,
        }
    }
}

/// Largest sender-side capture-to-send delay believed (toffset or packet duration), ms.
const MAX_CAPTURE_LAG_MS: i64 = 500;

/// RFC 5450 §2 transmission time offset: a 24-bit signed count of 90 kHz ticks (video)
/// that the packet was sent after its capture instant. `None` if malformed or outside
/// 0..=MAX_CAPTURE_LAG_MS.
fn toffset_ms(ext: &[u8]) -> Option<i64> {
    let ms = i64::from(rtp::transmission_offset(ext)?) * 1000 / 90_000;
    (0..=MAX_CAPTURE_LAG_MS).contains(&ms).then_some(ms)
}

/// Queue the transcoder's finished AAC frames as FLV messages; `base_ms` is where the
/// audio track's first sample sits on the timeline (its anchor plus the sender-report
/// correction, srsync.rs), `last_ms` its latest time. AAC frames sit on a sample-count
/// timeline anchored at the first Opus packet: it cannot drift from the RTP clock.
fn drain_aac(
    aac: &mut OpusToAac,
    base_ms: i64,
    last_ms: &mut u32,
    now: Instant,
    audience: Audience,
    out: &mut Vec<Frame>,
) {
    while let Some(f) = aac.poll_frame() {
        let fms = (base_ms + (f.sample_pos * 1000 / 48_000) as i64).clamp(0, i64::from(u32::MAX)) as u32;
        *last_ms = fms;
        out.push(Frame::build(MediaKind::Audio, fms, &f.flv_body, audience, Some(now)));
    }
}

impl RtcSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        offer_text: &str,
        identity: &DtlsIdentity,
        candidates: &[(IpAddr, u16)],
        secrets: RtcSecrets,
        now: Instant,
        stats: Arc<StreamStats>,
        audio_mode: AudioMode,
    ) -> Result<Self, RtcError> {
        let offer = sdp::parse_offer(offer_text).map_err(RtcError::BadOffer)?;
        let prefs = CodecPrefs { allow_g711: true, require_video_codec: true };
        let neg = sdp::negotiate(&offer, &prefs).map_err(|e| match e {
            SdpError::NoCommonCodecs => RtcError::NoCommonCodecs,
            other => RtcError::BadOffer(other),
        })?;
        let RtcSecrets { ice_ufrag: ufrag, ice_pwd: pwd, session_id, ssrc: local_ssrc } = secrets;
        let local = LocalParams {
            ice_ufrag: ufrag.clone(),
            ice_pwd: pwd.clone(),
            fingerprint_sha256: identity.fingerprint.clone(),
            candidates: candidates.to_vec(),
            session_id,
        };
        let answer = sdp::build_answer(&offer, &neg, &local);
        let params = TransportParams {
            local_ufrag: ufrag,
            local_pwd: pwd,
            remote_ufrag: neg.remote_ice_ufrag.clone(),
            remote_pwd: neg.remote_ice_pwd.clone(),
            remote_fingerprint: neg.remote_fingerprint.bytes().to_vec(),
        };
        let t = RtcTransport::new(Arc::clone(&name), params, identity, MAX_TRANSMIT, now);
        let twcc_id = neg.video.as_ref().and_then(|v| v.ext.transport_cc).or(neg.audio.as_ref().and_then(|a| a.ext.transport_cc));
        let video = neg.video.as_ref().map(|v| VideoTrack {
            pt: v.pt,
            rtx_pt: v.rtx_pt,
            ssrc: v.ssrc,
            recv: None,
            depack: H264Depacketizer::new(),
            first: None,
            last_ms: 0,
            sent_meta: false,
            toffset_id: v.ext.toffset,
            send_delay_ms: 0,
            sr: None,
            last_ts: 0,
        });
        let audio = match neg.audio.as_ref() {
            Some(a) => {
                let g711 = match (a.codec, audio_mode) {
                    (_, AudioMode::None) | (SdpAudioCodec::Opus, _) => None,
                    (SdpAudioCodec::Pcma, _) => Some(0x72), // 7 << 4 | 16-bit, mono
                    (SdpAudioCodec::Pcmu, _) => Some(0x82),
                };
                let aac = match audio_mode {
                    _ if a.codec != SdpAudioCodec::Opus => None,
                    AudioMode::None => None,
                    AudioMode::Aac | AudioMode::Opus => {
                        // Mono unless the sender said it sends stereo: a browser sends
                        // mono unless the answer asks for stereo, and a stereo AAC of
                        // mono audio costs ~1.5x the mono one for nothing (perf/micro.rs
                        // opus_to_aac: 98 against 64 µs per 20 ms packet).
                        let ch: u8 = if a.stereo { 2 } else { 1 };
                        Some(AacOut { channels: ch, enc: None })
                    }
                };
                Some(AudioTrack {
                    pt: a.pt,
                    ssrc: a.ssrc,
                    clock: a.clock_rate.max(1),
                    recv: None,
                    depack: OpusDepacketizer::new(),
                    aac,
                    transcode: VecDeque::new(),
                    opus_out: audio_mode == AudioMode::Opus && a.codec == SdpAudioCodec::Opus,
                    g711,
                    first: None,
                    sent_config: false,
                    last_ms: 0,
                    sr: None,
                    last_ts: 0,
                })
            }
            None => None,
        };
        stats.video_codec.store(if video.is_some() { 7 } else { 0 }, Relaxed);
        // The API reports what the publisher sends.
        let audio_id = match neg.audio.as_ref().map(|a| a.codec) {
            Some(SdpAudioCodec::Opus) => 13,
            Some(SdpAudioCodec::Pcma) => 7,
            Some(SdpAudioCodec::Pcmu) => 8,
            None => 0,
        };
        stats.audio_codec.store(audio_id, Relaxed);
        let aac_channels = audio.as_ref().and_then(|a| a.aac.as_ref()).map_or(0, |t| t.channels);
        stats.aac_channels.store(u64::from(aac_channels), Relaxed);
        Ok(RtcSession {
            name,
            answer,
            t,
            video,
            audio,
            twcc: twcc_id.map(|id| (id, TwccRecorder::new())),
            local_ssrc,
            first_media: None,
            last_rtp: None,
            last_pli: None,
            last_rr: None,
            events: VecDeque::new(),
            stats,
            dims: None,
            meta_has_audio: false,
            sr_sync: SrSync::new(),
        })
    }

    pub fn answer(&self) -> &str {
        &self.answer
    }
    pub fn local_ufrag(&self) -> &str {
        self.t.local_ufrag()
    }
    pub fn remote(&self) -> Option<SocketAddr> {
        self.t.remote()
    }
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.t.poll_transmit()
    }
    pub fn poll_event(&mut self) -> Option<RtcEvent> {
        self.events.pop_front()
    }

    fn fail(&mut self, why: RtcError) {
        self.t.fail(why);
        self.sync_transport();
    }

    /// The transport's events become the session's, in order.
    fn sync_transport(&mut self) {
        while let Some(ev) = self.t.poll_event() {
            self.events.push_back(match ev {
                TransportEvent::Connected => RtcEvent::Connected,
                TransportEvent::Ended(why) => RtcEvent::Ended(why),
            });
        }
    }

    /// One UDP datagram from `from` (RFC 7983 demultiplexing on the first byte).
    /// `Err` says why it was discarded, for the shell to count; the session goes on.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, d: &mut [u8]) -> Result<(), RtcDrop> {
        let kind = self.t.handle_datagram(now, from, d);
        self.sync_transport();
        match kind? {
            Demuxed::Handled => Ok(()),
            Demuxed::Rtcp => self.handle_rtcp(now, d),
            Demuxed::Rtp => self.handle_rtp(now, d),
        }
    }

    fn handle_rtcp(&mut self, now: Instant, d: &mut [u8]) -> Result<(), RtcDrop> {
        let ctx = self.t.srtp_in.as_mut().ok_or(RtcDrop::BeforeKeys)?;
        let len = ctx.unprotect_rtcp(d)?;
        let plain = d.get(..len).ok_or(RtcDrop::SrtpMalformed)?;
        let mut got_sr = false;
        for pkt in rtcp::parse(plain) {
            let Ok(rtcp::RtcpPacket::SenderReport { info, .. }) = pkt else { continue };
            if let Some(v) = self.video.as_mut().filter(|v| v.ssrc == Some(info.ssrc)) {
                v.sr = Some((info.ntp, info.rtp_ts));
                if let Some(r) = v.recv.as_mut() {
                    r.handle_sender_report(now, info.ntp);
                }
                got_sr = true;
            } else if let Some(a) = self.audio.as_mut().filter(|a| a.ssrc == Some(info.ssrc)) {
                a.sr = Some((info.ntp, info.rtp_ts));
                if let Some(r) = a.recv.as_mut() {
                    r.handle_sender_report(now, info.ntp);
                }
                got_sr = true;
            }
        }
        // Sender reports feed the receiver reports' LSR/DLSR, and refine audio against
        // video (srsync.rs): only a change of their A/V mapping from the first pair moves
        // audio, slewed in. Re-anchoring the tracks by the reports outright measured worse
        // against Chromium's own recording: its audio NTP times are ~10 ms after capture.
        if got_sr {
            self.update_sr_sync();
        }
        Ok(())
    }

    /// Feed the sender's current A/V mapping to the sync and publish what it says:
    /// `/api/streams` `av_sr_skew_ms` (how much later than our timeline the reports put
    /// audio; with Chromium a steady ~+10 ms) and `av_sr_shift_ms` (the correction applied).
    fn update_sr_sync(&mut self) {
        let (Some(v), Some(a)) = (self.video.as_ref(), self.audio.as_ref()) else { return };
        let (Some(va), Some(aa), Some(vsr), Some(asr)) = (v.first, a.first, v.sr, a.sr) else {
            return;
        };
        let video = TrackClock { anchor: va, last_ts: v.last_ts, clock: 90_000, sr: vsr };
        let audio = TrackClock { anchor: aa, last_ts: a.last_ts, clock: a.clock, sr: asr };
        let Some(skew) = srsync::sr_skew_ms(&video, &audio) else { return };
        self.sr_sync.on_skew(skew);
        if let Some(r) = self.sr_sync.residual_ms() {
            self.stats.av_sr_skew_ms.store(r, Relaxed);
        }
        self.stats.av_sr_shift_ms.store(self.sr_sync.shift_ms(), Relaxed);
    }

    fn handle_rtp(&mut self, now: Instant, d: &mut [u8]) -> Result<(), RtcDrop> {
        let ctx = self.t.srtp_in.as_mut().ok_or(RtcDrop::BeforeKeys)?;
        let len = ctx.unprotect_rtp(d)?;
        let plain = d.get(..len).ok_or(RtcDrop::SrtpMalformed)?;
        let pkt = rtp::parse(plain).map_err(|_| RtcDrop::RtpMalformed)?;
        self.last_rtp = Some(now);
        self.first_media.get_or_insert(now);
        self.stats.rtp_packets.fetch_add(1, Relaxed);
        if let Some((id, rec)) = self.twcc.as_mut() {
            if let Some(v) = pkt.extension(*id) {
                if let Some(&[b0, b1]) = v.get(..2) {
                    rec.record(u16::from_be_bytes([b0, b1]), now);
                }
            }
        }
        let pt = pkt.pt;
        if let Some(v) = self.video.as_mut() {
            if pt == v.pt || Some(pt) == v.rtx_pt {
                let (seq, payload) = if Some(pt) == v.rtx_pt {
                    match crate::proto::rtp_recv::unwrap_rtx(pkt.payload) {
                        Some(x) => x,
                        None => return Ok(()), // RTX padding probe: bandwidth probing, not media
                    }
                } else {
                    if v.ssrc != Some(pkt.ssrc) {
                        v.ssrc = Some(pkt.ssrc);
                    }
                    if let Some(d) = v.toffset_id.and_then(|id| pkt.extension(id)).and_then(toffset_ms) {
                        v.send_delay_ms = d;
                    }
                    (pkt.seq, pkt.payload)
                };
                let recv = v.recv.get_or_insert_with(|| RtpReceiver::new(90_000, now));
                let r = recv.handle_packet(now, seq, pkt.ts, pkt.marker, payload);
                self.pump_video(now);
                return r.map_err(RtcDrop::from);
            }
        }
        if let Some(a) = self.audio.as_mut() {
            if pt == a.pt {
                a.ssrc = Some(pkt.ssrc);
                let recv = a.recv.get_or_insert_with(|| {
                    // Audio holes are waited for, not NACKed: a late Opus packet is
                    // worth less than the delay of asking for it.
                    let mut r = RtpReceiver::new(a.clock, now);
                    r.disable_nack();
                    r
                });
                let r = recv.handle_packet(now, pkt.seq, pkt.ts, pkt.marker, pkt.payload);
                self.pump_audio(now);
                return r.map_err(RtcDrop::from);
            }
        }
        Err(RtcDrop::RtpUnknownPayloadType)
    }

    /// True when Opus packets wait for the transcoder: the shell should call
    /// [`handle_transcode`](Self::handle_transcode) (and may time it).
    pub fn transcode_pending(&self) -> bool {
        self.audio.as_ref().is_some_and(|a| !a.transcode.is_empty())
    }

    /// Run the Opus → AAC transcoder over the packets received since the last call and
    /// queue the AAC frames it finishes as media events. Returns how many Opus packets
    /// it transcoded. The CPU-heavy step of the session is its own call so that the
    /// shell can time it (`/api/streams` transcode cost) without the core reading a clock.
    pub fn handle_transcode(&mut self, now: Instant) -> usize {
        let mut out = Vec::new();
        let done = self.transcode_into(now, &mut out);
        self.events.extend(out.into_iter().map(RtcEvent::Media));
        done
    }

    fn transcode_into(&mut self, now: Instant, out: &mut Vec<Frame>) -> usize {
        let mut done = 0;
        if let Some(a) = self.audio.as_mut() {
            let audience = if a.opus_out { Audience::NotOpus } else { Audience::All };
            let first_ms = a.first.map_or(0, |(_, m)| m);
            if let Some(t) = a.aac.as_mut().and_then(AacOut::built) {
                while let Some((ts, data, shift)) = a.transcode.pop_front() {
                    let _ = t.push_opus(ts, &data);
                    drain_aac(t, first_ms + shift, &mut a.last_ms, now, audience, out);
                    done += 1;
                }
            }
        }
        if done > 0 {
            self.note_av_offset();
        }
        done
    }

    /// The session is ending: the last AAC frames still inside the encoder (its
    /// codec delay, ~43 ms), for the hub before it is told the stream stopped.
    pub fn finish(&mut self, now: Instant) -> Vec<Frame> {
        let mut out = Vec::new();
        self.transcode_into(now, &mut out);
        let Some(a) = self.audio.as_mut() else { return out };
        let audience = if a.opus_out { Audience::NotOpus } else { Audience::All };
        if let Some(t) = a.aac.as_mut().and_then(AacOut::built) {
            if t.finish().is_ok() {
                let base_ms = a.first.map_or(0, |(_, m)| m) + self.sr_sync.shift_ms();
                drain_aac(t, base_ms, &mut a.last_ms, now, audience, &mut out);
            }
        }
        out
    }

    /// Time of an RTP timestamp on the session timeline, in milliseconds.
    ///
    /// Each track is anchored once, at its first unit: the unit's RTP timestamp is put at
    /// its arrival time minus `capture_lag_ms`, the sender-side time between capturing
    /// that unit and sending it (video: the RFC 5450 transmission offset Chromium puts
    /// on every packet; audio: the packet's own duration, since its first sample was
    /// captured that long before the packet could be encoded). Anchoring at bare arrival
    /// would put video behind audio by the encoder's and pacer's delay (~35 ms measured
    /// against Chromium's own recording). After the anchor only the RTP clock counts, so
    /// the timeline cannot drift or step backwards.
    fn timeline_ms(first: &mut Option<(u64, i64)>, session_start: Option<Instant>, now: Instant, ts: u64, clock: u32, capture_lag_ms: i64) -> u32 {
        let (t0, ms0) = *first.get_or_insert_with(|| {
            let since = session_start.map(|s| now.saturating_duration_since(s).as_millis() as i64).unwrap_or(0);
            (ts, since - capture_lag_ms.clamp(0, MAX_CAPTURE_LAG_MS))
        });
        let delta = ts.wrapping_sub(t0) as i64;
        let ms = ms0 + delta * 1000 / i64::from(clock.max(1));
        ms.clamp(0, i64::from(u32::MAX)) as u32
    }

    fn pump_video(&mut self, now: Instant) {
        let start = self.first_media;
        let mut out = Vec::new();
        let mut want_pli = false;
        let Some(v) = self.video.as_mut() else { return };
        let Some(recv) = v.recv.as_mut() else { return };
        while let Some(p) = recv.poll_packet() {
            let view = RtpView { seq: p.seq, ts: p.ts, marker: p.marker, payload: &p.payload, after_loss: p.after_loss };
            let r = v.depack.push(view);
            if matches!(r, Pushed::Dropped(_)) && v.depack.awaiting_keyframe() {
                want_pli = true;
            }
            loop {
                if let Some(cfg) = v.depack.take_config() {
                    self.stats.width.store(u64::from(cfg.width), Relaxed);
                    self.stats.height.store(u64::from(cfg.height), Relaxed);
                    let ms = v.last_ms;
                    if !v.sent_meta {
                        v.sent_meta = true;
                        self.dims = Some((cfg.width, cfg.height));
                        let audio = self.audio.as_ref().filter(|a| a.sent_config).map(|a| (a.aac.is_some(), a.g711));
                        self.meta_has_audio = audio.is_some();
                        out.push(metadata_msg(ms, self.dims, audio));
                    }
                    self.stats.note_video(&cfg.flv_sequence_header, true);
                    out.push(Frame::new(MediaKind::Video, ms, &cfg.flv_sequence_header));
                }
                let Some(unit) = v.depack.take_unit() else { break };
                let ms = Self::timeline_ms(&mut v.first, start, now, unit.ts, 90_000, v.send_delay_ms);
                v.last_ms = ms;
                v.last_ts = unit.ts;
                self.stats.video_frames.fetch_add(1, Relaxed);
                if unit.keyframe {
                    self.stats.keyframes.fetch_add(1, Relaxed);
                }
                out.push(Frame::build(MediaKind::Video, ms, &unit.flv_body, Audience::All, Some(now)));
            }
            // The payload buffer goes back to the receiver: no allocation per packet.
            recv.recycle(p.payload);
        }
        if recv.take_keyframe_request() {
            want_pli = true;
        }
        let s = recv.stats();
        self.stats.rtp_lost.store(s.lost, Relaxed);
        self.stats.rtp_recovered.store(s.recovered, Relaxed);
        let ds = v.depack.stats();
        self.stats.units_dropped.store(ds.units_discarded, Relaxed);
        self.stats.units_skipped.store(ds.units_skipped, Relaxed);
        self.stats.jitter_us.store(u64::from(recv.jitter()) * 1_000_000 / 90_000, Relaxed);
        for m in out {
            self.events.push_back(RtcEvent::Media(m));
        }
        if want_pli {
            self.request_keyframe(now, false);
        }
    }

    fn pump_audio(&mut self, now: Instant) {
        let start = self.first_media;
        let mut out = Vec::new();
        let Some(a) = self.audio.as_mut() else { return };
        let Some(recv) = a.recv.as_mut() else { return };
        let aac_audience = if a.opus_out { Audience::NotOpus } else { Audience::All };
        while let Some(p) = recv.poll_packet() {
            let view = RtpView { seq: p.seq, ts: p.ts, marker: p.marker, payload: &p.payload, after_loss: p.after_loss };
            if let Some(tag) = a.g711 {
                // G.711: each RTP payload is a run of 8-bit samples; pass it through.
                if p.payload.is_empty() {
                    continue;
                }
                a.sent_config = true;
                self.stats.audio_frames.fetch_add(1, Relaxed);
                let lag = (p.payload.len() as i64) * 1000 / i64::from(a.clock.max(1));
                let ms = shifted(RtcSession::timeline_ms(&mut a.first, start, now, p.ts, a.clock, lag), self.sr_sync.step());
                a.last_ts = p.ts;
                a.last_ms = ms;
                let mut b = Vec::with_capacity(p.payload.len() + 1);
                b.push(tag);
                b.extend_from_slice(&p.payload);
                out.push(Frame::build(MediaKind::Audio, ms, &b, Audience::All, Some(now)));
                recv.recycle(p.payload);
                continue;
            }
            let _ = a.depack.push(view);
            while let Some(unit) = a.depack.take_unit() {
                self.stats.audio_frames.fetch_add(1, Relaxed);
                let lag = opus_packet_samples(&unit.data).map_or(0, |n| i64::from(n) * 1000 / 48_000);
                let shift = self.sr_sync.step();
                let ms = shifted(RtcSession::timeline_ms(&mut a.first, start, now, unit.ts, a.clock, lag), shift);
                a.last_ts = unit.ts;
                if a.aac.is_none() {
                    a.last_ms = ms;
                }
                if !a.sent_config {
                    a.sent_config = true;
                    if let Some(aac) = a.aac.as_mut() {
                        match aac.encoder() {
                            Some(t) => out.push(Frame::for_audience(MediaKind::Audio, ms, &t.flv_sequence_header(), aac_audience)),
                            None => {
                                // Never silently without audio: the session fails, named.
                                self.events.push_back(RtcEvent::Ended(RtcError::AudioEncoder));
                                return;
                            }
                        }
                    }
                    if a.opus_out {
                        let mut b = vec![EX_AUDIO_SEQUENCE_START];
                        b.extend_from_slice(FOURCC_OPUS);
                        b.extend_from_slice(&opus_head(2));
                        out.push(Frame::for_audience(MediaKind::Audio, ms, &b, Audience::Opus));
                    }
                }
                {
                    // The browser's own Opus: for RTMP players that asked for Opus
                    // (`--audio opus`), and always for WebRTC viewers (no transcoding).
                    let mut b = Vec::with_capacity(unit.data.len() + 5);
                    b.push(EX_AUDIO_CODED_FRAMES);
                    b.extend_from_slice(FOURCC_OPUS);
                    b.extend_from_slice(&unit.data);
                    let audience = if a.opus_out { Audience::Opus } else { Audience::Rtc };
                    out.push(Frame::build(MediaKind::Audio, ms, &b, audience, Some(now)));
                }
                if a.aac.is_some() {
                    if a.transcode.len() >= MAX_TRANSCODE_BACKLOG {
                        a.transcode.pop_front();
                    }
                    a.transcode.push_back((unit.ts, unit.data, shift));
                }
            }
            recv.recycle(p.payload);
        }
        let audio_ready = self.audio.as_ref().is_some_and(|a| a.sent_config && (a.aac.is_some() || a.g711.is_some()));
        if audio_ready && !self.meta_has_audio && self.video.as_ref().is_some_and(|v| v.sent_meta) {
            self.meta_has_audio = true;
            let ms = self.video.as_ref().map(|v| v.last_ms).unwrap_or(0);
            out.insert(0, self.metadata(ms, true));
        }
        self.note_av_offset();
        for m in out {
            self.events.push_back(RtcEvent::Media(m));
        }
    }

    /// `/api/streams` `av_offset_ms`: latest audio minus latest video on the timeline.
    fn note_av_offset(&self) {
        if let (Some(a), Some(v)) = (self.audio.as_ref(), self.video.as_ref()) {
            if a.first.is_some() && v.first.is_some() {
                self.stats.av_offset_ms.store(i64::from(a.last_ms) - i64::from(v.last_ms), Relaxed);
            }
        }
    }

    /// `onMetaData` listing only the tracks players will get now: announcing audio before
    /// its sequence header exists makes ffmpeg open an audio stream with no codec and
    /// give up (PROTOCOL-NOTES: players wait for announced tracks). When audio starts
    /// after the video's metadata went out, the metadata is sent again with it.
    fn metadata(&self, ms: u32, with_audio: bool) -> Frame {
        let audio = self.audio.as_ref().map(|a| (a.aac.is_some(), a.g711));
        metadata_msg(ms, self.dims, if with_audio { audio } else { None })
    }
}

/// The `onMetaData` body for the tracks given (see `RtcSession::metadata`).
fn metadata_msg(ms: u32, dims: Option<(u32, u32)>, audio: Option<(bool, Option<u8>)>) -> Frame {
    {
        let (w, h) = dims.unwrap_or((0, 0));
        let mut props = vec![
            ("width".to_owned(), Value::Number(f64::from(w))),
            ("height".to_owned(), Value::Number(f64::from(h))),
            ("videocodecid".to_owned(), Value::Number(7.0)),
        ];
        if let Some((aac, g711)) = audio {
            if aac {
                props.push(("audiocodecid".into(), Value::Number(10.0)));
                props.push(("audiosamplerate".into(), Value::Number(48_000.0)));
                props.push(("audiosamplesize".into(), Value::Number(16.0)));
                props.push(("stereo".into(), Value::Boolean(true)));
            } else if let Some(tag) = g711 {
                props.push(("audiocodecid".into(), Value::Number(f64::from(tag >> 4))));
                props.push(("audiosamplerate".into(), Value::Number(8_000.0)));
                props.push(("audiosamplesize".into(), Value::Number(16.0)));
                props.push(("stereo".into(), Value::Boolean(false)));
            }
        }
        props.push(("encoder".into(), Value::String("rtcbridge".into())));
        let mut body = Vec::new();
        amf0::encode_all(&[Value::String("onMetaData".into()), Value::EcmaArray(props)], &mut body);
        Frame::new(MediaKind::Data, ms, &body)
    }
}

impl RtcSession {

    /// Ask the publisher for a keyframe (PLI, RFC 4585 §6.3.1), rate limited unless
    /// `force`. Nothing before DTLS is up (no keys to send it with).
    pub fn request_keyframe(&mut self, now: Instant, force: bool) {
        if self.t.connected().is_none() || self.t.is_failed() {
            return;
        }
        if !force && self.last_pli.is_some_and(|t| now.saturating_duration_since(t) < PLI_MIN_INTERVAL) {
            return;
        }
        let Some(media_ssrc) = self.video.as_ref().and_then(|v| v.ssrc) else { return };
        let mut p = Vec::with_capacity(64);
        rtcp::write_pli(self.local_ssrc, media_ssrc, &mut p);
        // The attempt counts for the periodic timer even if it could not be sent (no
        // nominated address, SRTCP key limit): the timer must move on.
        self.last_pli = Some(now);
        if self.send_rtcp(p) {
            self.stats.plis.fetch_add(1, Relaxed);
        }
    }

    fn send_rtcp(&mut self, p: Vec<u8>) -> bool {
        self.t.send_rtcp(p)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: the earliest of
    /// the ICE agent's (connect timeout, consent), the DTLS retransmit, the connect and
    /// RTP inactivity limits, the receivers' NACK retries and give-ups, transport-cc
    /// feedback, and the periodic receiver report and keyframe request. `None` once the
    /// session has ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = Earliest(Some(self.t.poll_timeout()?));
        let Some(connected) = self.t.connected() else {
            return at.0;
        };
        at.add(self.last_rtp.unwrap_or(connected).checked_add(RTP_INACTIVITY));
        for r in [self.video.as_ref().and_then(|v| v.recv.as_ref()), self.audio.as_ref().and_then(|a| a.recv.as_ref())]
            .into_iter()
            .flatten()
        {
            at.add(r.poll_timeout());
        }
        if let Some((_, rec)) = self.twcc.as_ref() {
            at.add(rec.poll_timeout());
        }
        at.add(self.last_rr.map_or(Some(connected), |t| t.checked_add(RR_INTERVAL)));
        if self.video.as_ref().is_some_and(|v| v.ssrc.is_some()) {
            at.add(self.last_pli.map_or(Some(connected), |t| t.checked_add(PLI_PERIODIC)));
        }
        at.0
    }

    /// Do whatever is due at `now`; nothing at all when [`poll_timeout`](Self::poll_timeout)
    /// is later (an early or stale timer is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_none_or(|at| now < at) {
            return;
        }
        self.t.handle_timeout(now);
        self.sync_transport();
        if self.t.is_failed() {
            return;
        }
        let Some(connected) = self.t.connected() else {
            return;
        };
        if now.saturating_duration_since(self.last_rtp.unwrap_or(connected)) >= RTP_INACTIVITY {
            self.fail(RtcError::RtpInactivity);
            return;
        }
        let mut rtcp_out = Vec::new();
        for r in [self.video.as_mut().and_then(|v| v.recv.as_mut()), self.audio.as_mut().and_then(|a| a.recv.as_mut())]
            .into_iter()
            .flatten()
        {
            r.handle_timeout(now);
        }
        if let Some(v) = self.video.as_mut() {
            // NACKs for holes (RFC 4585 §6.2.1).
            // (Polled even before the media SSRC is known, so the retry times move on.)
            if let Some(seqs) = v.recv.as_mut().and_then(|r| r.poll_nack(now)) {
                if let Some(ssrc) = v.ssrc {
                    self.stats.nacks.fetch_add(seqs.len() as u64, Relaxed);
                    let mut rest: &[u16] = &seqs;
                    while !rest.is_empty() {
                        let mut p = Vec::new();
                        let n = rtcp::write_nack(self.local_ssrc, ssrc, rest, &mut p);
                        if n == 0 {
                            break;
                        }
                        rtcp_out.push(p);
                        rest = rest.get(n..).unwrap_or(&[]);
                    }
                }
            }
            // The receiver also gives up on holes in time.
            self.pump_video(now);
        }
        if self.audio.is_some() {
            self.pump_audio(now);
        }
        if self.last_pli.is_none_or(|t| now.saturating_duration_since(t) >= PLI_PERIODIC) {
            self.request_keyframe(now, true);
        }
        if self.last_rr.is_none_or(|t| now.saturating_duration_since(t) >= RR_INTERVAL) {
            self.last_rr = Some(now);
            let mut blocks = Vec::new();
            for (recv, ssrc) in [
                self.video.as_ref().and_then(|v| v.recv.as_ref().zip(v.ssrc)),
                self.audio.as_ref().and_then(|a| a.recv.as_ref().zip(a.ssrc)),
            ]
            .into_iter()
            .flatten()
            {
                blocks.push(recv.report_block(ssrc, now));
            }
            let mut p = Vec::new();
            if rtcp::write_rr(self.local_ssrc, &blocks, &mut p).is_ok() {
                rtcp_out.push(p);
            }
        }
        let media = self.video.as_ref().and_then(|v| v.ssrc).or(self.audio.as_ref().and_then(|a| a.ssrc)).unwrap_or(0);
        if let Some((_, rec)) = self.twcc.as_mut() {
            for _ in 0..TWCC_BURST {
                let mut p = Vec::new();
                if !rec.poll_feedback(now, self.local_ssrc, media, &mut p) {
                    break;
                }
                rtcp_out.push(p);
            }
        }
        for p in rtcp_out {
            self.send_rtcp(p);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_index_their_counters_and_have_distinct_labels() {
        for (i, d) in RtcDrop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i, "{d:?} out of order in ALL");
        }
        let mut labels: Vec<_> = RtcDrop::ALL.iter().map(|d| d.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RtcDrop::ALL.len());
        assert_eq!(RtcDrop::from(SrtpError::Replay), RtcDrop::SrtpReplay);
        assert_eq!(RtcDrop::from(IceDrop::Indication).label(), "stun_indication");
    }

    #[test]
    fn toffset_is_24_bit_signed_90khz_ticks_within_bounds() {
        // RFC 5450 §2: 24-bit signed, RTP clock units (90 kHz for video).
        assert_eq!(toffset_ms(&[0x00, 0x0c, 0x4e]), Some(35)); // 3150 ticks
        assert_eq!(toffset_ms(&[0, 0, 0]), Some(0));
        assert_eq!(toffset_ms(&[0xff, 0xff, 0xff]), Some(0)); // -1 tick rounds to 0 ms
        assert_eq!(toffset_ms(&[0xff, 0x00, 0x00]), None); // negative: not believed
        assert_eq!(toffset_ms(&[0x00, 0xb1, 0x00]), None); // 503 ms: too large
        assert_eq!(toffset_ms(&[0x00, 0x0c]), None);
        assert_eq!(toffset_ms(&[0, 0, 0, 0]), None);
    }

    #[test]
    fn timeline_anchor_subtracts_the_capture_lag_and_then_follows_the_rtp_clock() {
        let t0 = crate::runtime::now();
        let start = Some(t0);
        // Video's first frame arrives 100 ms after the session's first packet, having
        // waited 35 ms between capture and send: it sits at 65 ms.
        let mut v = None;
        let at = t0 + Duration::from_millis(100);
        assert_eq!(RtcSession::timeline_ms(&mut v, start, at, 900_000, 90_000, 35), 65);
        // Later frames: RTP clock only, whatever their arrival.
        let late = t0 + Duration::from_secs(9);
        assert_eq!(RtcSession::timeline_ms(&mut v, start, late, 900_000 + 90_000, 90_000, 0), 1065);
        // A first unit captured before the session's first packet arrived clamps at 0
        // for that unit, and the anchor keeps the exact (negative) origin.
        let mut a = None;
        assert_eq!(RtcSession::timeline_ms(&mut a, start, t0 + Duration::from_millis(5), 48_000, 48_000, 20), 0);
        assert_eq!(RtcSession::timeline_ms(&mut a, start, t0, 48_000 + 960, 48_000, 0), 5);
        // An absurd lag is capped.
        let mut c = None;
        assert_eq!(RtcSession::timeline_ms(&mut c, start, t0 + Duration::from_secs(2), 0, 90_000, 10_000), 1500);
    }
}
