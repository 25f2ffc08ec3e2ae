//! One WebRTC viewer (Flashphoner `playStream`, WHEP): a sink of a stream that
//! sends its H.264 and Opus over SRTP to one browser.
//!
//! Sans-IO, like the publisher session (`webrtc.rs`), and sharing its transport
//! (`rtc_transport.rs`: ICE-lite, DTLS-SRTP). The shell hands it the stream's
//! frames as the relay decides (`send_frame`, with the viewer's own timestamp),
//! its datagrams and its timeouts, and drains datagrams and events.
//!
//! - Video: the frame's RTP payloads are built once per stream and shared by
//!   every viewer (`Frame::rtp_video`: RFC 6184 mode 1, SPS/PPS in a STAP-A
//!   before every IDR); per viewer only the 12-byte header (its SSRC, sequence
//!   number, payload type, and the 90 kHz timestamp of the frame's time), the
//!   transport-wide sequence number when negotiated, and the SRTP protect.
//! - Audio: Opus frames of the stream (a WebRTC publisher's own, or made from
//!   AAC once per stream, `rtc_audio.rs`); RTP timestamps advance by exactly the
//!   packet's samples (960 per 20 ms), re-anchored on the frame time only when
//!   the two part by more than [`AUDIO_REANCHOR_MS`] (a publisher that returned).
//! - Never B-frames: a frame with a non-zero composition time ends the viewer
//!   with [`RtcError::TranscodeRequired`] (the shell checks before it joins; this
//!   is the guard).
//! - NACK (RFC 4585 §6.2.1) is answered from a history of what was sent (the
//!   shared frames, not copies); PLI and FIR become a keyframe request for the
//!   shell; receiver reports give loss and RTT for the API; transport-cc and REMB
//!   feedback are read and counted.
//! - RTCP sender reports every second map both tracks' RTP clocks to one NTP
//!   clock, so the browser can put audio and video in sync.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frame::Frame;
use super::rtc_transport::{Demuxed, Earliest, RtcTransport, TransportEvent, TransportParams};
use super::webrtc::{RtcDrop, RtcError, RtcSecrets};
use super::StreamStats;
use crate::proto::codec::aac::opus_packet_samples;
use crate::proto::dtls::DtlsIdentity;
use crate::proto::flv::MediaKind;
use crate::proto::packetize::{composition_time, H264Packetizer};
use crate::proto::sdp::{self, LocalParams, SdpError, SendParams};
use crate::proto::{rtcp, rtp};

/// Largest RTP payload: browsers use 1200 so packets fit any path's MTU with SRTP.
pub const MAX_RTP_PAYLOAD: usize = 1200;
/// Datagrams queued for the shell, at most (a keyframe of 2.5 Mbit/s at 1 s GOP is
/// ~250 packets).
const MAX_TRANSMIT: usize = 2048;
/// Video packets kept for NACK: about 2 s of 2.5 Mbit/s.
const HISTORY: usize = 512;
/// A packet is sent again at most this often for NACKs naming it.
const RESEND_MIN: Duration = Duration::from_millis(40);
/// A viewer's NACKs may make us send again at most one packet for every two sent new
/// (counted in halves, up to [`RESEND_BUDGET_MAX`] halves banked): a peer that NACKs
/// everything, over and over, costs at most 1.5x its stream, not the whole history
/// every [`RESEND_MIN`].
const RESEND_BUDGET_MAX: u32 = 1024;
const SR_INTERVAL: Duration = Duration::from_secs(1);
/// Keyframe requests passed on at most this often per viewer.
const KEYFRAME_REQUEST_MIN: Duration = Duration::from_millis(500);
/// A viewer that loses at least this fraction (in 1/256: 20 %) of its video for good
/// (after retransmissions), measured over [`LOSS_WINDOW`] and at least
/// [`LOSS_MIN_PACKETS`] packets, is congested: the relay then treats it as a player
/// over its queue limit (inter frames dropped until it recovers, eviction if it stays
/// so). One receiver report's fraction covers only the few packets since the last
/// one (1 of 3 lost reads 33 %), so it is not used for this.
const CONGESTED_LOSS_256: u32 = 51;
const LOSS_WINDOW: Duration = Duration::from_secs(2);
const LOSS_MIN_PACKETS: u32 = 100;

/// Audio RTP time follows the samples sent; the frame time may wander from it by this
/// much before the RTP clock is re-anchored.
pub const AUDIO_REANCHOR_MS: i64 = 100;
/// Frames may run this far ahead of the wall clock (network jitter of the source)
/// before the viewer's timeline is pulled back to it (see `RtcViewer::timeline`).
const CATCH_UP_SLACK_MS: i64 = 40;

#[derive(Debug)]
pub enum ViewerEvent {
    /// ICE and DTLS are up: media may flow (PLAYING).
    Connected,
    /// The viewer asked for a keyframe (PLI/FIR); rate limited here.
    KeyframeRequest,
    /// The viewer is over; nothing more will come.
    Ended(RtcError),
}

/// The random values a viewer starts from (RFC 3550 §5.1: random initial sequence
/// numbers and timestamps; SSRCs unique). Drawn from the OS CSPRNG by the shell.
#[derive(Debug, Clone)]
pub struct ViewerSecrets {
    pub rtc: RtcSecrets,
    pub video_ssrc: u32,
    pub audio_ssrc: u32,
    pub video_seq: u16,
    pub audio_seq: u16,
    pub video_ts: u32,
    pub audio_ts: u32,
}

impl ViewerSecrets {
    pub const RANDOM_BYTES: usize = 20;

    pub fn from_random(rtc: RtcSecrets, r: &[u8; Self::RANDOM_BYTES]) -> Self {
        let u32_at = |i: usize| r.get(i..i + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
        let u16_at = |i: usize| r.get(i..i + 2).and_then(|b| b.try_into().ok()).map_or(0, u16::from_be_bytes);
        let mut audio_ssrc = u32_at(4);
        if audio_ssrc == u32_at(0) || audio_ssrc == rtc.ssrc {
            audio_ssrc ^= 0x5a5a_5a5a;
        }
        ViewerSecrets {
            video_ssrc: u32_at(0),
            audio_ssrc,
            video_seq: u16_at(8),
            audio_seq: u16_at(10),
            video_ts: u32_at(12),
            audio_ts: u32_at(16),
            rtc,
        }
    }
}

/// What one sent video packet was, to send it again for a NACK.
#[derive(Clone)]
struct Sent {
    seq: u16,
    ts: u32,
    frame: Arc<Frame>,
    /// Index into the frame's RTP payloads.
    index: u16,
    resent: Option<Instant>,
}

struct VideoOut {
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    pk: H264Packetizer,
    packets: u32,
    octets: u32,
    /// The latest frame sent: its RTP timestamp, its frame time, when.
    last: Option<(u32, u32, Instant)>,
    /// A keyframe was sent since the configuration: deltas may follow.
    started: bool,
}

struct AudioOut {
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    packets: u32,
    octets: u32,
    /// RTP timestamp the next packet gets and the frame time it is expected at.
    next: Option<(u32, i64)>,
    last: Option<(u32, u32, Instant)>,
}

/// Counters of one viewer (also added to the stream's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ViewerStats {
    pub packets: u64,
    pub bytes: u64,
    pub retransmits: u64,
    /// NACKed packets not sent again: over the retransmission budget.
    pub resends_refused: u64,
    pub nacks: u64,
    pub plis: u64,
    pub twcc_feedback: u64,
    pub remb_bps: u64,
    /// Video lost for good over the last measured window, 1/256 units.
    pub loss_256: u8,
    pub rtt_us: u64,
    pub frames_skipped: u64,
}

pub struct RtcViewer {
    name: Arc<str>,
    answer: String,
    t: RtcTransport,
    video: Option<VideoOut>,
    audio: Option<AudioOut>,
    /// transport-wide-cc extension id and the next sequence number.
    twcc: Option<(u8, u16)>,
    local_ssrc: u32,
    cname: String,
    history: VecDeque<Sent>,
    /// Retransmissions allowed, in halves of a packet (see [`RESEND_BUDGET_MAX`]).
    resend_budget: u32,
    /// The start of the current loss window: the video report's extended highest
    /// sequence number and cumulative lost, and when.
    loss_mark: Option<(u32, i32, Instant)>,
    /// The first frame's arrival and time, and how far frames have been pulled back
    /// so that they do not run ahead of the wall clock (`timeline`).
    clock0: Option<(Instant, i64)>,
    catch_up_ms: i64,
    epoch: Instant,
    last_sr: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    events: VecDeque<ViewerEvent>,
    stream: Arc<StreamStats>,
    pub stats: ViewerStats,
}

/// Which of the offered H.264 formats to send a stream of profile `profile_idc`
/// (constraint flags `constraints`) as: the first offered format of the same
/// profile; constrained baseline (and baseline with constraint_set1) also fits any
/// 42xxxx format. `None`: the viewer offered nothing that decodes it.
pub fn pick_video_format(formats: &[(u8, u32)], profile_idc: u8, constraints: u8) -> Option<(u8, u32)> {
    let cb = profile_idc == 66 || (profile_idc == 77 && constraints & 0x80 != 0) || constraints & 0x40 != 0;
    let same = formats.iter().find(|(_, plid)| (plid >> 16) as u8 == profile_idc);
    let baseline = || formats.iter().find(|(_, plid)| (plid >> 16) as u8 == 66).filter(|_| cb);
    same.or_else(baseline).copied()
}

impl RtcViewer {
    /// Answer `offer_text` (a recvonly offer). `video_profile`: the stream's H.264
    /// (profile_idc, constraint flags) when it is known, to pick the payload type.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        offer_text: &str,
        identity: &DtlsIdentity,
        candidates: &[(IpAddr, u16)],
        secrets: ViewerSecrets,
        video_profile: Option<(u8, u8)>,
        now: Instant,
        stream: Arc<StreamStats>,
    ) -> Result<Self, RtcError> {
        let offer = sdp::parse_offer(offer_text).map_err(RtcError::BadOffer)?;
        let mut neg = sdp::negotiate_send(&offer).map_err(|e| match e {
            SdpError::NoCommonCodecs => RtcError::NoCommonCodecs,
            other => RtcError::BadOffer(other),
        })?;
        if let (Some(v), Some((profile, constraints))) = (neg.video.as_ref(), video_profile) {
            match pick_video_format(&v.h264_formats, profile, constraints) {
                Some((pt, plid)) => neg.use_video_format(pt, plid),
                None => return Err(RtcError::TranscodeRequired),
            }
        }
        let ViewerSecrets { rtc, video_ssrc, audio_ssrc, video_seq, audio_seq, video_ts, audio_ts } = secrets;
        let RtcSecrets { ice_ufrag, ice_pwd, session_id, ssrc: local_ssrc } = rtc;
        let local = LocalParams {
            ice_ufrag: ice_ufrag.clone(),
            ice_pwd: ice_pwd.clone(),
            fingerprint_sha256: identity.fingerprint.clone(),
            candidates: candidates.to_vec(),
            session_id,
        };
        // Not secret; distinct per viewer (RFC 7022 short-term persistent CNAME).
        let cname = format!("rtcbridge-{:08x}", local_ssrc);
        let send = SendParams { video_ssrc, audio_ssrc, cname: cname.clone(), stream_id: "rtcbridge".into() };
        let answer = sdp::build_answer_send(&offer, &neg, &local, &send);
        let params = TransportParams {
            local_ufrag: ice_ufrag,
            local_pwd: ice_pwd,
            remote_ufrag: neg.remote_ice_ufrag.clone(),
            remote_pwd: neg.remote_ice_pwd.clone(),
            remote_fingerprint: neg.remote_fingerprint.bytes().to_vec(),
        };
        let t = RtcTransport::new(Arc::clone(&name), params, identity, MAX_TRANSMIT, now);
        let twcc = neg.video.as_ref().and_then(|v| v.ext.transport_cc).or(neg.audio.as_ref().and_then(|a| a.ext.transport_cc));
        let video = neg.video.as_ref().map(|v| VideoOut {
            pt: v.pt,
            ssrc: video_ssrc,
            seq: video_seq,
            ts_base: video_ts,
            pk: H264Packetizer::new(MAX_RTP_PAYLOAD),
            packets: 0,
            octets: 0,
            last: None,
            started: false,
        });
        let audio = neg.audio.as_ref().map(|a| AudioOut {
            pt: a.pt,
            ssrc: audio_ssrc,
            seq: audio_seq,
            ts_base: audio_ts,
            packets: 0,
            octets: 0,
            next: None,
            last: None,
        });
        Ok(RtcViewer {
            name,
            answer,
            t,
            video,
            audio,
            twcc: twcc.map(|id| (id, 1)),
            local_ssrc,
            cname,
            history: VecDeque::with_capacity(HISTORY),
            resend_budget: 0,
            loss_mark: None,
            clock0: None,
            catch_up_ms: 0,
            epoch: now,
            last_sr: None,
            last_keyframe_request: None,
            events: VecDeque::new(),
            stream,
            stats: ViewerStats::default(),
        })
    }

    pub fn answer(&self) -> &str {
        &self.answer
    }
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
    pub fn local_ufrag(&self) -> &str {
        self.t.local_ufrag()
    }
    pub fn remote(&self) -> Option<SocketAddr> {
        self.t.remote()
    }
    pub fn is_connected(&self) -> bool {
        self.t.connected().is_some()
    }
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.t.poll_transmit()
    }
    /// Datagrams waiting for the shell (the relay's backlog for this sink, in packets).
    pub fn queued(&self) -> usize {
        self.t.queued()
    }
    /// The viewer's latest receiver report says it loses a fifth or more of what it
    /// is sent: it cannot keep up (UDP gives no other backpressure).
    pub fn congested(&self) -> bool {
        u32::from(self.stats.loss_256) >= CONGESTED_LOSS_256
    }

    /// A receiver report block about our video: over each window of at least
    /// [`LOSS_WINDOW`] and [`LOSS_MIN_PACKETS`] packets, the fraction lost for good
    /// (RFC 3550 §6.4.1: cumulative lost counts what never arrived, retransmissions
    /// included as arrived).
    fn video_report(&mut self, now: Instant, b: &rtcp::ReportBlock) {
        let Some((seq0, lost0, at)) = self.loss_mark else {
            self.loss_mark = Some((b.ext_highest_seq, b.cumulative_lost, now));
            return;
        };
        let expected = b.ext_highest_seq.wrapping_sub(seq0);
        if now.saturating_duration_since(at) < LOSS_WINDOW || !(LOSS_MIN_PACKETS..=1 << 24).contains(&expected) {
            return;
        }
        let lost = i64::from(b.cumulative_lost) - i64::from(lost0);
        let loss_256 = (lost.clamp(0, i64::from(expected)) * 256 / i64::from(expected)).min(255) as u8;
        self.stats.loss_256 = loss_256;
        self.stream.viewer_loss_256.store(u64::from(loss_256), Relaxed);
        self.loss_mark = Some((b.ext_highest_seq, b.cumulative_lost, now));
    }

    /// The stream's counters, once the viewer has joined it (it may not have existed
    /// when the viewer was made).
    pub fn set_stream_stats(&mut self, s: Arc<StreamStats>) {
        self.stream = s;
    }
    pub fn poll_event(&mut self) -> Option<ViewerEvent> {
        self.events.pop_front()
    }

    /// End the viewer (the first reason wins).
    pub fn fail(&mut self, why: RtcError) {
        self.t.fail(why);
        self.sync_transport();
    }

    fn sync_transport(&mut self) {
        while let Some(ev) = self.t.poll_event() {
            self.events.push_back(match ev {
                TransportEvent::Connected => ViewerEvent::Connected,
                TransportEvent::Ended(why) => ViewerEvent::Ended(why),
            });
        }
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, d: &mut [u8]) -> Result<(), RtcDrop> {
        let kind = self.t.handle_datagram(now, from, d);
        self.sync_transport();
        match kind? {
            Demuxed::Handled => Ok(()),
            Demuxed::Rtcp => self.handle_rtcp(now, d),
            // A viewer sends no media; its RTP (if any) is not ours to read.
            Demuxed::Rtp => Err(RtcDrop::RtpUnknownPayloadType),
        }
    }

    /// One frame of the stream at this viewer's time `ts` (ms), as the relay decided.
    pub fn send_frame(&mut self, now: Instant, ts: u32, frame: &Arc<Frame>) {
        if self.t.connected().is_none() || self.t.is_failed() {
            return;
        }
        if frame.kind == MediaKind::Data {
            return;
        }
        let ts = self.timeline(now, ts);
        match frame.kind {
            MediaKind::Video => self.send_video(now, ts, frame),
            MediaKind::Audio => self.send_audio(now, ts, frame),
            MediaKind::Data => {}
        }
    }

    /// The RTP-side time of a frame at the viewer's time `ts`. A joining viewer gets
    /// the cached GOP at once: seconds of frames in one instant. Their own times would
    /// put the browser's jitter buffer that far behind live for good; so frames never
    /// run more than [`CATCH_UP_SLACK_MS`] ahead of the wall clock since the first one:
    /// the burst is played fast, and live frames keep their own spacing after it. The
    /// pull-back only grows, and applies to both tracks alike (lip sync holds).
    fn timeline(&mut self, now: Instant, ts: u32) -> u32 {
        let ts = i64::from(ts);
        let (t0, ms0) = *self.clock0.get_or_insert((now, ts));
        let elapsed = now.saturating_duration_since(t0).as_millis() as i64;
        let lead = ts - ms0 - elapsed;
        if lead > self.catch_up_ms + CATCH_UP_SLACK_MS {
            self.catch_up_ms = lead - CATCH_UP_SLACK_MS;
        }
        (ts - self.catch_up_ms).clamp(0, i64::from(u32::MAX)) as u32
    }

    fn send_video(&mut self, now: Instant, ts: u32, frame: &Arc<Frame>) {
        let Some(v) = self.video.as_mut() else { return };
        if frame.config {
            if v.pk.set_sequence_header(frame.body()).is_ok() {
                v.started = false;
            }
            return;
        }
        if composition_time(frame.body()).is_some_and(|c| c != 0) {
            // Browsers' WebRTC decoders do not reorder: never send B-frames.
            self.fail(RtcError::TranscodeRequired);
            return;
        }
        if v.pk.config().is_none() || (!v.started && !frame.keyframe) {
            self.stats.frames_skipped += 1;
            return;
        }
        v.started = true;
        let rtp_ts = v.ts_base.wrapping_add(ts.wrapping_mul(90));
        let payloads = frame.rtp_video(&v.pk);
        let count = payloads.len();
        let first_seq = v.seq;
        v.seq = v.seq.wrapping_add(count as u16);
        self.resend_budget = self.resend_budget.saturating_add(count as u32).min(RESEND_BUDGET_MAX);
        for i in 0..count {
            let seq = first_seq.wrapping_add(i as u16);
            if self.history.len() >= HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(Sent { seq, ts: rtp_ts, frame: Arc::clone(frame), index: i as u16, resent: None });
            self.send_video_packet(seq, rtp_ts, frame, i);
        }
        if let Some(v) = self.video.as_mut() {
            v.last = Some((rtp_ts, ts, now));
        }
    }

    /// Build, protect and queue video packet `index` of `frame`.
    fn send_video_packet(&mut self, seq: u16, ts: u32, frame: &Frame, index: usize) -> bool {
        let Some(v) = self.video.as_mut() else { return false };
        let Some(p) = frame.rtp_video(&v.pk).get(index) else { return false };
        let h = rtp::RtpHeader { marker: p.marker, pt: v.pt, seq, ts, ssrc: v.ssrc };
        v.packets = v.packets.wrapping_add(1);
        v.octets = v.octets.wrapping_add(p.data.len() as u32);
        let payload = p.data.as_slice();
        send_rtp(&mut self.t, &mut self.twcc, &h, payload, &mut self.stats, &self.stream)
    }

    fn send_audio(&mut self, now: Instant, ts: u32, frame: &Frame) {
        let Some(a) = self.audio.as_mut() else { return };
        if frame.config {
            return;
        }
        let Some(opus) = frame.body().get(5..) else { return };
        if opus.is_empty() {
            return;
        }
        let samples = opus_packet_samples(opus).unwrap_or(960);
        let Some(rtp_ts) = audio_rtp_ts(a.next, a.ts_base, ts) else {
            self.stats.frames_skipped += 1;
            return;
        };
        a.next = Some((rtp_ts.wrapping_add(samples), i64::from(ts) + i64::from(samples / 48)));
        a.last = Some((rtp_ts, ts, now));
        let h = rtp::RtpHeader { marker: false, pt: a.pt, seq: a.seq, ts: rtp_ts, ssrc: a.ssrc };
        a.seq = a.seq.wrapping_add(1);
        a.packets = a.packets.wrapping_add(1);
        a.octets = a.octets.wrapping_add(opus.len() as u32);
        send_rtp(&mut self.t, &mut self.twcc, &h, opus, &mut self.stats, &self.stream);
    }

    fn handle_rtcp(&mut self, now: Instant, d: &mut [u8]) -> Result<(), RtcDrop> {
        let ctx = self.t.srtp_in.as_mut().ok_or(RtcDrop::BeforeKeys)?;
        let len = ctx.unprotect_rtcp(d)?;
        let plain = d.get(..len).ok_or(RtcDrop::SrtpMalformed)?;
        let video_ssrc = self.video.as_ref().map(|v| v.ssrc);
        let ours = |s: u32| Some(s) == video_ssrc || self.audio.as_ref().is_some_and(|a| a.ssrc == s);
        let mut nacked: Vec<u16> = Vec::new();
        let mut keyframe = false;
        let mut reports = Vec::new();
        for pkt in rtcp::parse(plain) {
            match pkt {
                Ok(rtcp::RtcpPacket::ReceiverReport { reports: blocks, .. }) | Ok(rtcp::RtcpPacket::SenderReport { reports: blocks, .. }) => {
                    reports.extend(blocks.iter().filter(|b| ours(b.ssrc)));
                }
                Ok(rtcp::RtcpPacket::Nack { media_ssrc, list, .. }) if Some(media_ssrc) == video_ssrc => {
                    nacked.extend(list.seqs().take(256));
                }
                Ok(rtcp::RtcpPacket::Pli { media_ssrc, .. }) if Some(media_ssrc) == video_ssrc => keyframe = true,
                Ok(rtcp::RtcpPacket::Fir { entries, .. }) if entries.iter().any(|e| Some(e.ssrc) == video_ssrc) => keyframe = true,
                Ok(rtcp::RtcpPacket::TransportCc { .. }) => self.stats.twcc_feedback += 1,
                Ok(rtcp::RtcpPacket::Remb { bitrate_bps, .. }) => self.stats.remb_bps = bitrate_bps,
                _ => {}
            }
        }
        for b in reports {
            if Some(b.ssrc) == video_ssrc {
                self.video_report(now, &b);
            }
            if b.lsr != 0 {
                // RFC 3550 §6.4.1: RTT = arrival - LSR - DLSR, in 1/65536 s.
                let mid = (self.ntp(now) >> 16) as u32;
                let rtt = mid.wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                if rtt < 65536 * 10 {
                    self.stats.rtt_us = u64::from(rtt) * 1_000_000 / 65536;
                    self.stream.viewer_rtt_us.store(self.stats.rtt_us, Relaxed);
                }
            }
        }
        if !nacked.is_empty() {
            self.stats.nacks += nacked.len() as u64;
            self.resend(now, &nacked);
        }
        if keyframe {
            self.stats.plis += 1;
            self.stream.plis_received.fetch_add(1, Relaxed);
            if self.last_keyframe_request.is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_MIN) {
                self.last_keyframe_request = Some(now);
                self.events.push_back(ViewerEvent::KeyframeRequest);
            }
        }
        Ok(())
    }

    /// Send the NACKed packets again, from the history (same sequence number and
    /// timestamp: RFC 4585 generic NACK without RTX).
    fn resend(&mut self, now: Instant, seqs: &[u16]) {
        let Some(front) = self.history.front().map(|s| s.seq) else { return };
        for &seq in seqs {
            let at = usize::from(seq.wrapping_sub(front));
            let Some(s) = self.history.get_mut(at) else { continue };
            if s.seq != seq || s.resent.is_some_and(|t| now.saturating_duration_since(t) < RESEND_MIN) {
                continue;
            }
            if self.resend_budget < 2 {
                self.stats.resends_refused += 1;
                continue;
            }
            self.resend_budget -= 2;
            s.resent = Some(now);
            let s = s.clone();
            if self.send_video_packet(s.seq, s.ts, &s.frame, usize::from(s.index)) {
                self.stats.retransmits += 1;
                self.stream.retransmits.fetch_add(1, Relaxed);
            }
        }
    }

    /// Our NTP clock (RFC 3550 §4): one second past the era start at the viewer's
    /// creation, then the monotonic clock. Both tracks' reports use it, which is all
    /// lip sync needs; RTT uses only differences of it.
    fn ntp(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch) + Duration::from_secs(1);
        (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = Earliest(Some(self.t.poll_timeout()?));
        if let Some(c) = self.t.connected() {
            at.add(self.last_sr.unwrap_or(c).checked_add(SR_INTERVAL));
        }
        at.0
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.t.handle_timeout(now);
        self.sync_transport();
        if self.t.is_failed() || self.t.connected().is_none() {
            return;
        }
        if self.last_sr.is_none_or(|t| now.saturating_duration_since(t) >= SR_INTERVAL) {
            self.last_sr = Some(now);
            self.send_reports(now);
        }
    }

    /// One compound RTCP packet: an SR per track that has sent, then the SDES CNAME.
    fn send_reports(&mut self, now: Instant) {
        let ntp = self.ntp(now);
        let mut p = Vec::with_capacity(128);
        let mut first_ssrc = None;
        let tracks = [
            self.video.as_ref().map(|v| (v.ssrc, v.last, 90u32, v.packets, v.octets)),
            self.audio.as_ref().map(|a| (a.ssrc, a.last, 48u32, a.packets, a.octets)),
        ];
        for (ssrc, last, per_ms, packets, octets) in tracks.into_iter().flatten() {
            let Some((rtp_ts, _, at)) = last else { continue };
            // The RTP time now: the last packet's plus the time since it was sent.
            let since = now.saturating_duration_since(at);
            let ticks = (since.as_micros() as u64 * u64::from(per_ms) / 1000) as u32;
            let info = rtcp::SenderInfo { ssrc, ntp, rtp_ts: rtp_ts.wrapping_add(ticks), packets, octets };
            if rtcp::write_sr(&info, &[], &mut p).is_ok() {
                first_ssrc.get_or_insert(ssrc);
            }
        }
        let Some(ssrc) = first_ssrc else { return };
        if rtcp::write_sdes_cname(ssrc, self.cname.as_bytes(), &mut p).is_ok() {
            self.t.send_rtcp(p);
        }
    }

    /// The viewer is leaving on our side (stop, publisher gone): a BYE for its tracks.
    pub fn close(&mut self) {
        let ssrcs: Vec<u32> = self.video.as_ref().map(|v| v.ssrc).into_iter().chain(self.audio.as_ref().map(|a| a.ssrc)).collect();
        let mut p = Vec::new();
        if rtcp::write_bye(&ssrcs, &mut p).is_ok() {
            self.t.send_rtcp(p);
        }
        let _ = self.local_ssrc;
    }
}

/// The RTP timestamp of an Opus packet at time `ts` (ms), given what the next one was
/// expected to be (`next`: its RTP timestamp and time): exactly where the samples sent
/// so far end while the times agree within [`AUDIO_REANCHOR_MS`], so steps are exact
/// (960 per 20 ms), never the rounded milliseconds; re-anchored on `ts` when it jumps
/// ahead; `None` (leave it out) when it is behind the audio already sent (a joining
/// viewer's cached burst, pulled back to the wall clock: audio cannot be played
/// fast), so RTP time never goes back.
fn audio_rtp_ts(next: Option<(u32, i64)>, ts_base: u32, ts: u32) -> Option<u32> {
    let at_ms = i64::from(ts);
    match next {
        Some((next, expected)) if (at_ms - expected).abs() <= AUDIO_REANCHOR_MS => Some(next),
        Some((_, expected)) if at_ms < expected => None,
        _ => Some(ts_base.wrapping_add(ts.wrapping_mul(48))),
    }
}

/// Header (with the transport-wide sequence number when negotiated), payload, SRTP,
/// queue; counted for the viewer and the stream.
fn send_rtp(t: &mut RtcTransport, twcc: &mut Option<(u8, u16)>, h: &rtp::RtpHeader, payload: &[u8], stats: &mut ViewerStats, stream: &StreamStats) -> bool {
    let mut pkt = Vec::with_capacity(12 + 8 + payload.len() + 16);
    let res = match twcc.as_mut() {
        Some((id, seq)) => {
            let v = seq.to_be_bytes();
            *seq = seq.wrapping_add(1);
            rtp::write_header(h, &[(*id, &v)], &mut pkt)
        }
        None => rtp::write_header(h, &[], &mut pkt),
    };
    if res.is_err() {
        return false;
    }
    pkt.extend_from_slice(payload);
    let n = pkt.len() as u64;
    if !t.send_rtp(pkt) {
        return false;
    }
    stats.packets += 1;
    stats.bytes += n;
    stream.rtp_packets_out.fetch_add(1, Relaxed);
    stream.rtp_bytes_out.fetch_add(n, Relaxed);
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn video_format_follows_the_source_profile() {
        let offered = [(96, 0x42001f), (98, 0x42e01f), (100, 0x4d001f), (102, 0x640c1f)];
        assert_eq!(pick_video_format(&offered, 66, 0xc0), Some((96, 0x42001f)));
        assert_eq!(pick_video_format(&offered, 100, 0), Some((102, 0x640c1f)));
        assert_eq!(pick_video_format(&offered, 77, 0), Some((100, 0x4d001f)));
        // Debian's Chromium offers no High: a High source needs a transcode...
        let debian = [(96, 0x42e01f), (100, 0x4d001f)];
        assert_eq!(pick_video_format(&debian, 100, 0), None);
        // ...unless it is constrained (constraint_set1: decodable as baseline).
        assert_eq!(pick_video_format(&debian, 100, 0x40), Some((96, 0x42e01f)));
    }

    #[test]
    fn opus_timestamps_step_by_samples_not_rounded_milliseconds() {
        // 20 ms packets whose millisecond times were rounded (21, 41, 60, ...).
        let mut next = None;
        let mut out = Vec::new();
        for ts in [1u32, 21, 41, 60, 81, 101] {
            let r = audio_rtp_ts(next, 1000, ts).unwrap();
            next = Some((r.wrapping_add(960), i64::from(ts) + 20));
            out.push(r);
        }
        assert!(out.windows(2).all(|w| w[1] - w[0] == 960), "{out:?}");
        // A jump ahead (publisher back after a gap) re-anchors on the time.
        let r = audio_rtp_ts(next, 1000, 5000).unwrap();
        assert_eq!(r, 1000 + 5000 * 48);
        // Behind what was sent: left out, never backwards.
        assert_eq!(audio_rtp_ts(Some((r + 960, 5020)), 1000, 4700), None);
    }

    // ---- a connected viewer in virtual time ---------------------------------------

    use crate::proto::codec::h264::flv_nalu_body;
    use crate::proto::srtp::{SrtpContext, SrtpProfile};

    const PEER: &str = "127.0.0.1:40000";
    /// ffmpeg's FLV sequence header of a 640x360 constrained-baseline stream.
    const FLV_SEQ_640X360: &str = "17000000000142c01effe100196742c01ed900a02ff970110000030001000003003c0f162e4801000568cb83cb20";

    /// A viewer of a Chromium recvonly offer with ICE and DTLS done, and the SRTP
    /// contexts of its peer (`from_us` reads what the viewer sends, `to_us` protects
    /// what the peer sends it).
    struct Harness {
        v: RtcViewer,
        from_us: SrtpContext,
        to_us: SrtpContext,
        t0: Instant,
    }

    /// One RTP packet as the peer reads it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Got {
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    impl Harness {
        fn new() -> Harness {
            let t0 = crate::runtime::now();
            let offer = crate::proto::sdp::tests::CHROME_OFFER.replace("a=sendonly", "a=recvonly");
            let identity = DtlsIdentity::generate().unwrap();
            let rtc = RtcSecrets::from_random(&[7; RtcSecrets::RANDOM_BYTES]);
            let secrets = ViewerSecrets::from_random(rtc, &[3; ViewerSecrets::RANDOM_BYTES]);
            let cands = [(IpAddr::from([127, 0, 0, 1]), 5000)];
            let mut v = RtcViewer::new("s".into(), &offer, &identity, &cands, secrets, Some((66, 0xc0)), t0, Arc::new(StreamStats::default())).unwrap();
            let p = SrtpProfile::AeadAes128Gcm;
            let ctx = |k: u8| SrtpContext::new(p, &[k; 16], &[k; 12]).unwrap();
            v.t.connect_for_test(t0, PEER.parse().unwrap(), ctx(1), ctx(2));
            v.sync_transport();
            assert!(matches!(v.poll_event(), Some(ViewerEvent::Connected)));
            let mut h = Harness { v, from_us: ctx(1), to_us: ctx(2), t0 };
            h.send(Duration::ZERO, 0, &hex(FLV_SEQ_640X360));
            h
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn video_ssrc(&self) -> u32 {
            self.v.video.as_ref().unwrap().ssrc
        }

        /// A video frame of the stream (FLV body) at stream time `ts`, given to the
        /// viewer at `at` after the start.
        fn send(&mut self, at: Duration, ts: u32, body: &[u8]) {
            let f = Frame::new(MediaKind::Video, ts, body).shared();
            self.v.send_frame(self.t0 + at, ts, &f);
        }

        /// An access unit of `size` bytes (an IDR when `key`): several packets.
        fn send_au(&mut self, at: Duration, ts: u32, key: bool, size: usize) {
            let mut nal = vec![if key { 0x65 } else { 0x41 }];
            nal.resize(size, 0xab);
            self.send(at, ts, &flv_nalu_body(key, &[&nal]));
        }

        /// The RTP packets the viewer queued since the last call, decrypted.
        fn take(&mut self) -> Vec<Got> {
            self.take_with(false)
        }

        /// Retransmissions: the peer lost the originals, so its SRTP replay window has
        /// not seen them (here it did: read them with a context of their own).
        fn take_resent(&mut self) -> Vec<Got> {
            self.take_with(true)
        }

        fn take_with(&mut self, resent: bool) -> Vec<Got> {
            let mut fresh = SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[1; 16], &[1; 12]).unwrap();
            let ctx = if resent { &mut fresh } else { &mut self.from_us };
            let mut got = Vec::new();
            while let Some((to, mut d)) = self.v.poll_transmit() {
                assert_eq!(to, PEER.parse().unwrap());
                if rtp::is_rtcp(&d) {
                    continue;
                }
                let n = ctx.unprotect_rtp(&mut d).unwrap();
                let p = rtp::parse(&d[..n]).unwrap();
                got.push(Got { ssrc: p.ssrc, seq: p.seq, ts: p.ts, marker: p.marker });
            }
            got
        }

        /// The peer sends the viewer an RTCP compound packet.
        fn rtcp(&mut self, at_ms: u64, mut plain: Vec<u8>) {
            self.to_us.protect_rtcp(&mut plain).unwrap();
            let now = self.at(at_ms);
            self.v.handle_datagram(now, PEER.parse().unwrap(), &mut plain).unwrap();
        }

        fn nack(&mut self, at_ms: u64, seqs: &[u16]) {
            let mut p = Vec::new();
            rtcp::write_nack(0x1234, self.video_ssrc(), seqs, &mut p);
            self.rtcp(at_ms, p);
        }

        fn pli(&mut self, at_ms: u64) {
            let mut p = Vec::new();
            rtcp::write_pli(0x1234, self.video_ssrc(), &mut p);
            self.rtcp(at_ms, p);
        }

        fn rr(&mut self, at_ms: u64, ext_highest_seq: u32, cumulative_lost: i32) {
            let b = rtcp::ReportBlock { ssrc: self.video_ssrc(), fraction_lost: 0, cumulative_lost, ext_highest_seq, jitter: 0, lsr: 0, dlsr: 0 };
            let mut p = Vec::new();
            rtcp::write_rr(0x1234, &[b], &mut p).unwrap();
            self.rtcp(at_ms, p);
        }

        fn keyframe_requests(&mut self) -> usize {
            std::iter::from_fn(|| self.v.poll_event()).filter(|e| matches!(e, ViewerEvent::KeyframeRequest)).count()
        }
    }

    #[test]
    fn nacks_are_answered_from_the_history_within_the_resend_budget() {
        let mut h = Harness::new();
        h.send_au(Duration::ZERO, 0, true, 5000);
        let first = h.take();
        assert!(first.len() >= 4, "an IDR of 5000 bytes is several packets: {first:?}");
        assert!(first.last().unwrap().marker && first.iter().rev().skip(1).all(|p| !p.marker), "the marker ends the frame");
        // Two lost: resent as they were (same sequence number and timestamp, media SSRC).
        let lost = [first[1], first[2]];
        h.nack(20, &[lost[0].seq, lost[1].seq]);
        assert_eq!(h.take_resent(), lost.to_vec());
        assert_eq!((h.v.stats.nacks, h.v.stats.retransmits), (2, 2));
        // Asked again within 40 ms: not again; later: again.
        h.nack(40, &[lost[0].seq]);
        assert!(h.take_resent().is_empty(), "a resend at most once per 40 ms");
        h.nack(70, &[lost[0].seq]);
        assert_eq!(h.take_resent(), vec![lost[0]]);
        // A sequence number never sent is not answered.
        h.nack(80, &[first[0].seq.wrapping_sub(100)]);
        assert!(h.take_resent().is_empty());

        // A peer that NACKs everything over and over gets at most one resend for every
        // two packets sent new.
        let mut sent = first.len();
        let mut resent = 3;
        for i in 1..=60u32 {
            let t = u64::from(i) * 100;
            h.send_au(Duration::from_millis(t), i * 100, false, 2400);
            let new = h.take();
            sent += new.len();
            let all: Vec<u16> = h.v.history.iter().map(|s| s.seq).collect();
            h.nack(t + 50, &all[all.len().saturating_sub(256)..]);
            resent += h.take_resent().len();
        }
        assert!(resent * 2 <= sent, "{resent} resends for {sent} packets sent new");
        assert!(resent * 2 + 4 >= sent, "the budget is used, not wasted: {resent} resends for {sent}");
        assert!(h.v.stats.resends_refused > 0);
        assert_eq!(h.v.stats.retransmits as usize, resent);
    }

    #[test]
    fn plis_and_firs_become_keyframe_requests_at_most_every_500_ms() {
        let mut h = Harness::new();
        h.send_au(Duration::ZERO, 0, true, 1000);
        h.take();
        h.pli(100);
        h.pli(200);
        h.pli(500);
        assert_eq!(h.keyframe_requests(), 1, "three PLIs within 500 ms: one request");
        let mut p = Vec::new();
        rtcp::write_fir(0x1234, h.video_ssrc(), 1, &mut p);
        h.rtcp(650, p);
        assert_eq!(h.keyframe_requests(), 1, "a FIR 550 ms later: the next request");
        // A PLI for another SSRC (say, audio) asks for nothing.
        let mut p = Vec::new();
        rtcp::write_pli(0x1234, h.video_ssrc() ^ 1, &mut p);
        h.rtcp(2000, p);
        assert_eq!(h.keyframe_requests(), 0);
        assert_eq!(h.v.stats.plis, 4);
    }

    #[test]
    fn a_joining_burst_is_pulled_back_to_the_wall_clock_and_never_goes_back() {
        let mut h = Harness::new();
        // The cached GOP: 2 s of frames (stream time 10000..11967) at one instant.
        for k in 0..60u32 {
            h.send_au(Duration::ZERO, 10_000 + k * 33, k == 0, 300);
        }
        let burst = h.take();
        // Then live frames in real time.
        for k in 60..120u32 {
            h.send_au(Duration::from_millis(u64::from(k - 59) * 33), 10_000 + k * 33, false, 300);
        }
        let live = h.take();
        let frame_ts = |pkts: &[Got]| -> Vec<u32> { pkts.iter().filter(|p| p.marker).map(|p| p.ts).collect() };
        let (b, l) = (frame_ts(&burst), frame_ts(&live));
        assert_eq!((b.len(), l.len()), (60, 60));
        let base = b[0];
        let ms = |ts: u32| i64::from(ts.wrapping_sub(base)) / 90;
        // The burst runs at most 40 ms ahead of the wall clock (here: no time passed).
        assert!(b.iter().all(|&t| ms(t) <= CATCH_UP_SLACK_MS), "burst at {:?} ms", b.iter().map(|&t| ms(t)).collect::<Vec<_>>());
        // Timestamps never go back, and live frames keep their own spacing (33 ms).
        let all: Vec<i64> = b.iter().chain(&l).map(|&t| ms(t)).collect();
        assert!(all.windows(2).all(|w| w[1] >= w[0]), "{all:?}");
        assert!(l.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 33 * 90), "live spacing");
        // Live frames sit at the wall clock (plus the slack), not 2 s behind it.
        let last_wall_ms = 61 * 33;
        assert!((ms(l[59]) - last_wall_ms).abs() <= CATCH_UP_SLACK_MS, "last live frame at {} ms, wall clock {last_wall_ms} ms", ms(l[59]));
    }

    #[test]
    fn heavy_loss_over_a_window_makes_the_viewer_congested_and_light_loss_does_not() {
        let mut h = Harness::new();
        h.rr(0, 1000, 0);
        // 1 s later: a window too short to judge, whatever it says.
        h.rr(1000, 1200, 100);
        assert!(!h.v.congested());
        // 2 s and 300 packets after the mark, 25 % lost for good: congested.
        h.rr(2000, 1300, 75);
        assert!(h.v.congested(), "loss {} / 256", h.v.stats.loss_256);
        // The next window: 5 % lost: not congested any more.
        h.rr(4100, 1500, 85);
        assert!(!h.v.congested(), "loss {} / 256", h.v.stats.loss_256);
        // Too few packets in a long window (an idle stream): no verdict, the last holds.
        h.rr(9000, 1550, 85);
        assert_eq!(h.v.stats.loss_256, 12);
    }

    #[test]
    fn secrets_make_distinct_ssrcs() {
        let rtc = RtcSecrets::from_random(&[7; RtcSecrets::RANDOM_BYTES]);
        let s = ViewerSecrets::from_random(rtc, &[1; ViewerSecrets::RANDOM_BYTES]);
        assert_ne!(s.video_ssrc, s.audio_ssrc);
    }
}
