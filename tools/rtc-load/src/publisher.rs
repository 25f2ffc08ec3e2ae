//! One synthetic WebRTC publisher: WHIP offer/answer, ICE (controlling, full
//! agent against the server's ICE-lite), DTLS client, SRTP sender.
//!
//! Sans-IO like the server's cores: the shell in `main.rs` owns the sockets
//! and the clock; it hands this type bytes and `now`, and drains
//! [`RtcPublisher::poll_transmit`] (UDP datagrams for the server) after every
//! call. HTTP is plain bytes in and out ([`whip_post`], [`parse_http_response`]).
//!
//! Sequence: `answer` → ICE checks (USE-CANDIDATE on every check, aggressive
//! nomination; retransmitted with backoff) → on the first success the DTLS
//! client starts (`a=setup:actpass` in the offer, the server answers
//! `passive`) → keys exported (RFC 5764 §4.2: client write key first) →
//! `Media`. Consent checks every [`CONSENT_INTERVAL`]; RTCP from the server
//! is decrypted and PLI/FIR/NACK counted (PLI/FIR set
//! [`RtcPublisher::take_keyframe_request`], NACKed packets are resent from a
//! small history of protected packets).
//!
//! A WHEP viewer is the same client with a receiver attached
//! ([`RtcPublisher::new_viewer`], [`crate::viewer::ViewerRx`]): a recvonly
//! offer, the same ICE and DTLS client, then it sends no media, only consent
//! checks and a receiver report a second, and every SRTP packet from the
//! server is unprotected and handed to the receiver.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use rtcbridge::proto::rtcp::{self, RtcpPacket, SenderInfo};
use rtcbridge::proto::rtp::{self, RtpHeader};
use rtcbridge::proto::sdp::{self, SdpHash};
use rtcbridge::proto::srtp::{SrtpContext, SrtpProfile};
use rtcbridge::proto::stun::{self, StunBindingRequest, StunClass, StunMethod, StunRole, StunWriter};

use crate::h264::{self, H264Packetizer};
use crate::viewer::ViewerRx;

pub const VIDEO_PT: u8 = 102;
pub const AUDIO_PT: u8 = 111;
/// RTP payload limit (the packet is this + 12 header + 16 GCM tag).
pub const MAX_RTP_PAYLOAD: usize = 1200;
/// 90 kHz H.264 clock (RFC 6184 §8.2.1), 48 kHz Opus clock (RFC 7587 §4.1).
pub const VIDEO_CLOCK: u32 = 90_000;
pub const AUDIO_CLOCK: u32 = 48_000;

/// First check retransmission interval, doubled up to [`ICE_RTO_MAX`].
const ICE_RTO: Duration = Duration::from_millis(50);
const ICE_RTO_MAX: Duration = Duration::from_millis(800);
/// Give up on ICE after this long without a success response.
const ICE_TIMEOUT: Duration = Duration::from_secs(8);
/// Consent freshness check period (RFC 7675 §5.1 allows 4-6 s; we are tighter).
pub const CONSENT_INTERVAL: Duration = Duration::from_secs(2);
/// Consent lost after this long without a success response (RFC 7675: 30 s).
const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The DTLS handshake must finish within this.
const DTLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Sender reports (RFC 3550 §6.2: about every 1 s at these rates).
const SR_INTERVAL: Duration = Duration::from_secs(1);
/// Video packets kept (protected) for NACK retransmission.
const HISTORY: usize = 512;
/// Datagrams queued for the shell; more are dropped (counted).
const TX_QUEUE: usize = 4096;
/// Host candidate type preference (RFC 8445 §5.1.2.2).
const HOST_PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;
/// Largest WHIP answer we read.
pub const MAX_HTTP_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet (ramp).
    Idle,
    /// WHIP POST in flight.
    Signaling,
    Ice,
    Dtls,
    Media,
    Failed,
}

/// Per-process DTLS identity of the publishers (one certificate for all).
pub struct ClientIdentity {
    config: Arc<dimpl::Config>,
    cert: dimpl::DtlsCertificate,
    /// `AA:BB:...` SHA-256 of the certificate, for `a=fingerprint`.
    fingerprint: String,
}

impl ClientIdentity {
    pub fn generate() -> Result<Self, String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| format!("DTLS key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("DTLS cert: {e}"))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "rtc-load");
        let cert = params.self_signed(&key).map_err(|e| format!("DTLS cert: {e}"))?;
        let der = cert.der().to_vec();
        let fingerprint = rtcbridge::proto::dtls::format_fingerprint(&Sha256::digest(&der));
        let config = dimpl::Config::builder().build().map_err(|e| format!("DTLS config: {e}"))?;
        Ok(ClientIdentity {
            config: Arc::new(config),
            cert: dimpl::DtlsCertificate { certificate: der, private_key: key.serialize_der() },
            fingerprint,
        })
    }
}

/// Counters reported in the summary.
#[derive(Debug, Default, Clone)]
pub struct PublisherStats {
    pub packets: u64,
    pub bytes: u64,
    pub video_packets: u64,
    pub audio_packets: u64,
    /// SRTP bytes of first transmissions (no retransmissions, no RTCP).
    pub video_bytes: u64,
    pub audio_bytes: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Video frames not sent while waiting for this publisher's first IDR.
    pub frames_before_idr: u64,
    pub plis: u64,
    pub firs: u64,
    pub nacks: u64,
    pub retransmits: u64,
    /// NACKed sequence numbers no longer in the history.
    pub nacks_unanswered: u64,
    pub rtcp_received: u64,
    pub rtcp_bad: u64,
    pub tx_queue_drops: u64,
}

pub struct RtcPublisher {
    pub name: String,
    pub phase: Phase,
    pub failure: Option<String>,
    pub started: Option<Instant>,
    pub connected: Option<Instant>,
    pub media_end: Option<Instant>,
    pub stats: PublisherStats,
    /// `Location` of the WHIP resource (for DELETE at the end).
    pub location: Option<String>,
    /// `--no-media`: send no audio or video, only a padding-only RTP packet with each SR
    /// tick, so that the server sees RTP activity.
    pub keepalive_only: bool,
    /// Where media goes (the chosen server candidate).
    pub server: Option<SocketAddr>,
    /// A WHEP viewer's receiving side; `None` for a publisher.
    pub rx: Option<Box<ViewerRx>>,
    pub srtp_profile: Option<SrtpProfile>,

    local_ufrag: String,
    local_pwd: String,
    remote_ufrag: String,
    remote_pwd: String,
    remote_fp: Vec<u8>,
    tiebreaker: u64,
    rng: u64,

    // ICE: the outstanding check and when to resend it.
    check_tid: Option<[u8; 12]>,
    check_next: Option<Instant>,
    check_rto: Duration,
    ice_deadline: Option<Instant>,
    consent_ok: Option<Instant>,

    dtls: Option<dimpl::Dtls>,
    dtls_buf: Vec<u8>,
    dtls_timeout: Option<Instant>,
    dtls_deadline: Option<Instant>,
    peer_ok: bool,

    srtp_tx: Option<SrtpContext>,
    srtp_rx: Option<SrtpContext>,

    video_ssrc: u32,
    audio_ssrc: u32,
    video_seq: u16,
    audio_seq: u16,
    video_ts0: u32,
    audio_ts0: u32,
    seen_idr: bool,
    keyframe_wanted: bool,
    history: Vec<Option<(u16, Vec<u8>)>>,
    sr_next: Option<Instant>,
    video_octets: u32,
    audio_octets: u32,
    video_sent: u32,
    audio_sent: u32,
    /// Latest (media clock instant, RTP timestamp) per track, for SRs.
    video_clock: Option<(Instant, u32)>,
    audio_clock: Option<(Instant, u32)>,

    tx: VecDeque<Vec<u8>>,
    sei: Vec<u8>,
}

impl RtcPublisher {
    pub fn new(name: String, seed: u64) -> Self {
        let mut rng = seed | 1;
        let local_ufrag = ice_chars(&mut rng, 8);
        let local_pwd = ice_chars(&mut rng, 24);
        let tiebreaker = next_rand(&mut rng);
        let video_ssrc = next_rand(&mut rng) as u32 | 1;
        let audio_ssrc = video_ssrc.wrapping_add(0x1000);
        let video_seq = next_rand(&mut rng) as u16 & 0x7fff;
        let audio_seq = next_rand(&mut rng) as u16 & 0x7fff;
        let video_ts0 = next_rand(&mut rng) as u32;
        let audio_ts0 = next_rand(&mut rng) as u32;
        RtcPublisher {
            name,
            keepalive_only: false,
            phase: Phase::Idle,
            failure: None,
            started: None,
            connected: None,
            media_end: None,
            stats: PublisherStats::default(),
            location: None,
            server: None,
            rx: None,
            srtp_profile: None,
            local_ufrag,
            local_pwd,
            remote_ufrag: String::new(),
            remote_pwd: String::new(),
            remote_fp: Vec::new(),
            tiebreaker,
            rng,
            check_tid: None,
            check_next: None,
            check_rto: ICE_RTO,
            ice_deadline: None,
            consent_ok: None,
            dtls: None,
            dtls_buf: vec![0u8; 2048],
            dtls_timeout: None,
            dtls_deadline: None,
            peer_ok: false,
            srtp_tx: None,
            srtp_rx: None,
            video_ssrc,
            audio_ssrc,
            video_seq,
            audio_seq,
            video_ts0,
            audio_ts0,
            seen_idr: false,
            keyframe_wanted: false,
            history: vec![None; HISTORY],
            sr_next: None,
            video_octets: 0,
            audio_octets: 0,
            video_sent: 0,
            audio_sent: 0,
            video_clock: None,
            audio_clock: None,
            tx: VecDeque::new(),
            sei: Vec::with_capacity(40),
        }
    }

    /// A WHEP viewer of `name`: receives, never sends media.
    pub fn new_viewer(name: String, seed: u64) -> Self {
        let mut p = RtcPublisher::new(name, seed);
        p.rx = Some(Box::new(ViewerRx::new(VIDEO_PT, AUDIO_PT)));
        p
    }

    pub fn is_viewer(&self) -> bool {
        self.rx.is_some()
    }

    pub fn fail(&mut self, now: Instant, reason: impl Into<String>) {
        if self.phase == Phase::Failed {
            return;
        }
        if self.phase == Phase::Media {
            self.media_end = Some(now);
        }
        self.phase = Phase::Failed;
        self.failure = Some(reason.into());
        self.dtls = None;
        self.tx.clear();
    }

    /// The SDP offer: BUNDLE of one H.264 video and one Opus audio section,
    /// sendonly (a viewer's recvonly, without a=ssrc and msid), rtcp-mux, our ICE
    /// credentials and DTLS fingerprint.
    pub fn offer(&self, id: &ClientIdentity) -> String {
        let mut transport = String::new();
        for l in [
            "c=IN IP4 0.0.0.0".to_string(),
            "a=rtcp:9 IN IP4 0.0.0.0".to_string(),
            format!("a=ice-ufrag:{}", self.local_ufrag),
            format!("a=ice-pwd:{}", self.local_pwd),
            format!("a=fingerprint:sha-256 {}", id.fingerprint),
            "a=setup:actpass".to_string(),
        ] {
            transport.push_str(&l);
            transport.push_str("\r\n");
        }
        let (v, a) = (self.video_ssrc, self.audio_ssrc);
        if self.is_viewer() {
            return format!(
                "v=0\r\no=- {sess} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}\r\n{transport}a=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:{VIDEO_PT} H264/90000\r\na=rtcp-fb:{VIDEO_PT} nack\r\na=rtcp-fb:{VIDEO_PT} nack pli\r\na=rtcp-fb:{VIDEO_PT} ccm fir\r\n\
a=fmtp:{VIDEO_PT} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\n{transport}a=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
a=rtpmap:{AUDIO_PT} opus/48000/2\r\na=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1\r\n",
                sess = self.tiebreaker >> 1,
            );
        }
        format!(
            "v=0\r\no=- {sess} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\na=msid-semantic: WMS rtcload\r\n\
m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}\r\n{transport}a=mid:0\r\na=sendonly\r\na=msid:rtcload v0\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
a=rtpmap:{VIDEO_PT} H264/90000\r\na=rtcp-fb:{VIDEO_PT} nack\r\na=rtcp-fb:{VIDEO_PT} nack pli\r\na=rtcp-fb:{VIDEO_PT} ccm fir\r\n\
a=fmtp:{VIDEO_PT} level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:{v} cname:rtcload\r\na=ssrc:{v} msid:rtcload v0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\n{transport}a=mid:1\r\na=sendonly\r\na=msid:rtcload a0\r\na=rtcp-mux\r\n\
a=rtpmap:{AUDIO_PT} opus/48000/2\r\na=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1\r\n\
a=ssrc:{a} cname:rtcload\r\na=ssrc:{a} msid:rtcload a0\r\n",
            sess = self.tiebreaker >> 1,
        )
    }

    /// Take the WHIP answer: remote ICE credentials, fingerprint and the
    /// server's host candidate (127.0.0.1 if offered, else the first IPv4, else
    /// the first). Starts ICE.
    pub fn handle_answer(&mut self, now: Instant, answer: &str, location: Option<String>) -> Result<(), String> {
        let parsed = sdp::parse_offer(answer).map_err(|e| format!("answer SDP: {e}"))?;
        let m = parsed.media.iter().find(|m| m.port != 0).ok_or("answer accepts no media section")?;
        let ufrag = m.ice_ufrag.or(parsed.session.ice_ufrag).ok_or("answer has no a=ice-ufrag")?;
        let pwd = m.ice_pwd.or(parsed.session.ice_pwd).ok_or("answer has no a=ice-pwd")?;
        let fp = m
            .fingerprints
            .iter()
            .chain(parsed.session.fingerprints.iter())
            .find(|f| f.hash == SdpHash::Sha256)
            .ok_or("answer has no sha-256 a=fingerprint")?;
        let mut cands: Vec<SocketAddr> = Vec::new();
        for c in parsed.media.iter().flat_map(|m| m.candidates.iter()) {
            // foundation component transport priority address port typ host
            let t: Vec<&str> = c.split_ascii_whitespace().collect();
            if t.len() >= 8 && t[2].eq_ignore_ascii_case("udp") && t[7] == "host" {
                if let (Ok(ip), Ok(port)) = (t[4].parse::<IpAddr>(), t[5].parse::<u16>()) {
                    cands.push(SocketAddr::new(ip, port));
                }
            }
        }
        let server = cands
            .iter()
            .find(|a| a.ip().is_loopback())
            .or_else(|| cands.iter().find(|a| a.is_ipv4()))
            .or(cands.first())
            .copied()
            .ok_or("answer has no UDP host candidate")?;
        self.remote_ufrag = ufrag.to_string();
        self.remote_pwd = pwd.to_string();
        self.remote_fp = fp.bytes().to_vec();
        self.server = Some(server);
        self.location = location;
        self.phase = Phase::Ice;
        self.ice_deadline = Some(now + ICE_TIMEOUT);
        self.check_rto = ICE_RTO;
        self.send_check(now, true);
        Ok(())
    }

    fn send_check(&mut self, now: Instant, use_candidate: bool) {
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&next_rand(&mut self.rng).to_be_bytes());
        tid[8..].copy_from_slice(&(next_rand(&mut self.rng) as u32).to_be_bytes());
        let username = format!("{}:{}", self.remote_ufrag, self.local_ufrag);
        let req = StunBindingRequest {
            username: &username,
            priority: HOST_PRIORITY,
            role: StunRole::Controlling(self.tiebreaker),
            use_candidate,
        };
        let mut out = Vec::with_capacity(128);
        match StunWriter::binding_request(&mut out, tid, &req, self.remote_pwd.as_bytes()) {
            Ok(_) => {
                self.check_tid = Some(tid);
                self.check_next = Some(now + self.check_rto);
                self.push_tx(out);
            }
            Err(e) => self.fail(now, format!("STUN request: {e}")),
        }
    }

    /// One datagram from the server (RFC 7983 demultiplexing on the first byte).
    pub fn handle_datagram(&mut self, now: Instant, d: &mut [u8]) {
        match d.first() {
            Some(0..=3) => self.handle_stun(now, d),
            Some(20..=63) => self.handle_dtls(now, d),
            Some(128..=191) if rtp::is_rtcp(d) => self.handle_rtcp(now, d),
            Some(128..=191) => self.handle_rtp(now, d),
            _ => {}
        }
    }

    /// SRTP from the server: a viewer decrypts and reads every packet.
    fn handle_rtp(&mut self, now: Instant, d: &mut [u8]) {
        let (Some(rx), Some(ctx)) = (self.rx.as_mut(), self.srtp_rx.as_mut()) else { return };
        match ctx.unprotect_rtp(d) {
            Ok(len) => rx.handle_rtp(now, &d[..len], d.len()),
            Err(_) => rx.stats.srtp_errors += 1,
        }
    }

    fn handle_stun(&mut self, now: Instant, d: &[u8]) {
        let Ok(msg) = stun::parse(d) else { return };
        if msg.method() != StunMethod::BINDING || Some(msg.transaction_id()) != self.check_tid {
            return;
        }
        match msg.class() {
            StunClass::Success => {}
            StunClass::Error => {
                let (code, reason) = msg.error_code().unwrap_or((0, ""));
                self.fail(now, format!("ICE check answered {code} {reason}"));
                return;
            }
            _ => return,
        }
        // RFC 8445 §7.2.5.2: the response must carry integrity under the remote password.
        if !msg.verify_integrity(self.remote_pwd.as_bytes()) {
            return;
        }
        self.check_tid = None;
        self.consent_ok = Some(now);
        self.check_next = Some(now + CONSENT_INTERVAL);
        self.check_rto = ICE_RTO;
        if self.phase == Phase::Ice {
            self.start_dtls(now);
        }
    }

    /// ICE is up: the shell starts the DTLS client with the shared identity
    /// ([`RtcPublisher::begin_dtls`]) when [`RtcPublisher::needs_dtls`] says so.
    fn start_dtls(&mut self, now: Instant) {
        self.phase = Phase::Dtls;
        self.dtls_deadline = Some(now + DTLS_TIMEOUT);
    }

    pub fn needs_dtls(&self) -> bool {
        self.phase == Phase::Dtls && self.dtls.is_none()
    }

    pub fn begin_dtls(&mut self, now: Instant, id: &ClientIdentity) {
        let mut dtls = dimpl::Dtls::new_12(Arc::clone(&id.config), id.cert.clone(), now);
        dtls.set_active(true);
        if let Err(e) = dtls.handle_timeout(now) {
            self.fail(now, format!("DTLS start: {e}"));
            return;
        }
        self.dtls = Some(dtls);
        self.drain_dtls(now);
    }

    fn handle_dtls(&mut self, now: Instant, d: &[u8]) {
        let Some(dtls) = self.dtls.as_mut() else { return };
        if let Err(e) = dtls.handle_packet(d) {
            self.fail(now, format!("DTLS: {e}"));
            return;
        }
        self.drain_dtls(now);
    }

    fn drain_dtls(&mut self, now: Instant) {
        let mut keys: Option<(Vec<u8>, dimpl::SrtpProfile)> = None;
        let mut connected = false;
        let mut err: Option<String> = None;
        {
            let Some(dtls) = self.dtls.as_mut() else { return };
            loop {
                match dtls.poll_output(&mut self.dtls_buf) {
                    dimpl::Output::Packet(p) if self.tx.len() < TX_QUEUE => self.tx.push_back(p.to_vec()),
                    dimpl::Output::Packet(_) => self.stats.tx_queue_drops += 1,
                    dimpl::Output::BufferTooSmall { needed } => {
                        if needed > 1 << 16 {
                            err = Some("DTLS engine asked for an oversized buffer".into());
                            break;
                        }
                        self.dtls_buf.resize(needed, 0);
                    }
                    dimpl::Output::Timeout(t) => {
                        self.dtls_timeout = Some(t);
                        break;
                    }
                    dimpl::Output::Connected => connected = true,
                    dimpl::Output::PeerCert(der) => {
                        // RFC 8122 §5: the server's certificate must match its SDP fingerprint.
                        if Sha256::digest(der).as_slice() != self.remote_fp.as_slice() {
                            err = Some("DTLS server certificate does not match the answer's fingerprint".into());
                            break;
                        }
                        self.peer_ok = true;
                    }
                    dimpl::Output::KeyingMaterial(km, profile) => keys = Some((km.to_vec(), profile)),
                    dimpl::Output::CloseNotify => {
                        err = Some("DTLS close_notify from the server".into());
                        break;
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = err {
            self.fail(now, e);
            return;
        }
        if let Some((km, profile)) = keys {
            if let Err(e) = self.install_keys(&km, profile) {
                self.fail(now, e);
                return;
            }
        }
        if connected && self.phase == Phase::Dtls {
            if !self.peer_ok {
                self.fail(now, "DTLS finished without the server's certificate");
                return;
            }
            if self.srtp_tx.is_none() {
                self.fail(now, "DTLS finished without SRTP keys (use_srtp)");
                return;
            }
            self.phase = Phase::Media;
            self.connected = Some(now);
            self.dtls_timeout = None;
            self.sr_next = Some(now + SR_INTERVAL);
            // Start on a key frame: ask the shared encoder for one.
            self.keyframe_wanted = !self.is_viewer();
        }
    }

    /// RFC 5764 §4.2: client write key | server write key | client salt | server salt.
    /// We are the DTLS client: we protect with the client key.
    fn install_keys(&mut self, km: &[u8], profile: dimpl::SrtpProfile) -> Result<(), String> {
        let p = match profile {
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => SrtpProfile::Aes128CmSha1_80,
            dimpl::SrtpProfile::AEAD_AES_128_GCM => SrtpProfile::AeadAes128Gcm,
            dimpl::SrtpProfile::AEAD_AES_256_GCM => SrtpProfile::AeadAes256Gcm,
            other => return Err(format!("unsupported SRTP profile {other:?}")),
        };
        let (k, s) = (p.key_len(), p.salt_len());
        if km.len() < 2 * (k + s) {
            return Err("SRTP keying material too short".into());
        }
        let (ck, sk) = (&km[..k], &km[k..2 * k]);
        let (cs, ss) = (&km[2 * k..2 * k + s], &km[2 * k + s..2 * (k + s)]);
        self.srtp_tx = Some(SrtpContext::new(p, ck, cs).map_err(|e| format!("SRTP: {e}"))?);
        self.srtp_rx = Some(SrtpContext::new(p, sk, ss).map_err(|e| format!("SRTP: {e}"))?);
        self.srtp_profile = Some(p);
        Ok(())
    }

    fn handle_rtcp(&mut self, now: Instant, d: &mut [u8]) {
        let Some(rx) = self.srtp_rx.as_mut() else { return };
        if !rtp::is_rtcp(d) {
            return;
        }
        let Ok(len) = rx.unprotect_rtcp(d) else {
            self.stats.rtcp_bad += 1;
            return;
        };
        self.stats.rtcp_received += 1;
        let mut resend: Vec<u16> = Vec::new();
        for pkt in rtcp::parse(&d[..len]) {
            match pkt {
                Ok(RtcpPacket::SenderReport { info, .. }) => {
                    if let Some(rx) = self.rx.as_mut() {
                        rx.handle_sr(now, info.ssrc, info.ntp);
                    }
                }
                Ok(RtcpPacket::Pli { media_ssrc, .. }) if media_ssrc == self.video_ssrc => {
                    self.stats.plis += 1;
                    self.keyframe_wanted = true;
                }
                Ok(RtcpPacket::Fir { entries, .. }) => {
                    if entries.iter().any(|e| e.ssrc == self.video_ssrc) {
                        self.stats.firs += 1;
                        self.keyframe_wanted = true;
                    }
                }
                Ok(RtcpPacket::Nack { media_ssrc, list, .. }) if media_ssrc == self.video_ssrc => {
                    for seq in list.seqs().take(HISTORY) {
                        self.stats.nacks += 1;
                        resend.push(seq);
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    self.stats.rtcp_bad += 1;
                    break;
                }
            }
        }
        for seq in resend {
            match &self.history[usize::from(seq) % HISTORY] {
                Some((s, pkt)) if *s == seq => {
                    // The same protected bytes: same index, same content (RFC 3711 §3.3.1).
                    let pkt = pkt.clone();
                    self.stats.retransmits += 1;
                    self.count_sent(pkt.len());
                    self.push_tx(pkt);
                }
                _ => self.stats.nacks_unanswered += 1,
            }
        }
    }

    /// A PLI/FIR (or the connect) asked for a key frame that was not sent yet.
    /// Cleared by the next IDR this publisher sends.
    pub fn keyframe_pending(&self) -> bool {
        self.phase == Phase::Media && self.keyframe_wanted
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Ice => [self.check_next, self.ice_deadline].into_iter().flatten().min(),
            Phase::Dtls => [self.check_next, self.dtls_timeout, self.dtls_deadline].into_iter().flatten().min(),
            Phase::Media => [self.check_next, self.sr_next].into_iter().flatten().min(),
            _ => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Ice => {
                if self.ice_deadline.is_some_and(|t| t <= now) {
                    self.fail(now, "ICE: no binding success response");
                    return;
                }
                if self.check_next.is_some_and(|t| t <= now) {
                    self.check_rto = (self.check_rto * 2).min(ICE_RTO_MAX);
                    self.send_check(now, true);
                }
            }
            Phase::Dtls | Phase::Media => {
                if self.phase == Phase::Dtls && self.dtls_deadline.is_some_and(|t| t <= now) {
                    self.fail(now, "DTLS: handshake timed out");
                    return;
                }
                if self.consent_ok.is_some_and(|t| now.duration_since(t) > CONSENT_TIMEOUT) {
                    self.fail(now, "ICE: consent lost (no binding response for 30 s)");
                    return;
                }
                if self.check_next.is_some_and(|t| t <= now) {
                    // Consent freshness (RFC 7675): a new transaction each interval.
                    self.check_rto = CONSENT_INTERVAL;
                    self.send_check(now, false);
                }
                if self.phase == Phase::Dtls && self.dtls_timeout.is_some_and(|t| t <= now) {
                    self.dtls_timeout = None;
                    if let Some(dtls) = self.dtls.as_mut() {
                        if let Err(e) = dtls.handle_timeout(now) {
                            self.fail(now, format!("DTLS: {e}"));
                            return;
                        }
                    }
                    self.drain_dtls(now);
                }
                if self.phase == Phase::Media && self.sr_next.is_some_and(|t| t <= now) {
                    self.sr_next = Some(now + SR_INTERVAL);
                    if self.is_viewer() {
                        self.send_receiver_report(now);
                    } else {
                        self.send_sender_reports(now);
                    }
                    if self.keepalive_only {
                        self.send_padding(now);
                    }
                }
            }
            _ => {}
        }
    }

    /// RTP timestamp of the video frame shown at media instant `at` (frame `k`).
    pub fn send_video(&mut self, frame: &crate::media::EncodedFrame, k: u64, fps: f64, at: Instant, pz: &mut H264Packetizer) {
        if self.phase != Phase::Media || self.is_viewer() {
            return;
        }
        if !self.seen_idr && !frame.idr {
            self.stats.frames_before_idr += 1;
            return;
        }
        self.seen_idr = true;
        if frame.idr {
            self.keyframe_wanted = false;
        }
        let ts = self.video_ts0.wrapping_add((k as f64 * f64::from(VIDEO_CLOCK) / fps).round() as u64 as u32);
        self.video_clock = Some((at, ts));
        // The SEI carries the time this publisher sends the frame (after the shared encode).
        let us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut sei = std::mem::take(&mut self.sei);
        h264::write_wallclock_sei(us, &mut sei);
        let mut nals: Vec<&[u8]> = Vec::with_capacity(frame.ranges.len() + 1);
        let mut inserted = false;
        for nal in frame.nals() {
            let t = h264::nal_type(nal);
            // H.264 7.4.1.2.3: SEI before the first VCL NAL unit of the access unit.
            if !inserted && (t == h264::NAL_SLICE || t == h264::NAL_IDR) {
                nals.push(&sei);
                inserted = true;
            }
            nals.push(nal);
        }
        let mut packets: Vec<Vec<u8>> = Vec::with_capacity(16);
        pz.packetize(&nals, |payload, last| {
            let mut pkt = Vec::with_capacity(12 + payload.len() + 16);
            let h = RtpHeader { marker: last, pt: VIDEO_PT, seq: 0, ts, ssrc: self.video_ssrc };
            let _ = rtp::write_header(&h, &[], &mut pkt);
            pkt.extend_from_slice(payload);
            packets.push(pkt);
        });
        self.sei = sei;
        for mut pkt in packets {
            let seq = self.video_seq;
            self.video_seq = self.video_seq.wrapping_add(1);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            let plain_payload = pkt.len() - 12;
            let Some(tx) = self.srtp_tx.as_mut() else { return };
            if let Err(e) = tx.protect_rtp(&mut pkt) {
                self.fail(at, format!("SRTP protect: {e}"));
                return;
            }
            self.video_sent = self.video_sent.wrapping_add(1);
            self.video_octets = self.video_octets.wrapping_add(plain_payload as u32);
            self.stats.video_packets += 1;
            self.stats.video_bytes += pkt.len() as u64;
            self.count_sent(pkt.len());
            self.history[usize::from(seq) % HISTORY] = Some((seq, pkt.clone()));
            self.push_tx(pkt);
        }
        self.stats.video_frames += 1;
    }

    /// Opus frame `k` (20 ms each).
    pub fn send_audio(&mut self, opus: &[u8], k: u64, at: Instant) {
        if self.phase != Phase::Media || self.is_viewer() {
            return;
        }
        let ts = self.audio_ts0.wrapping_add((k as u32).wrapping_mul(crate::media::OPUS_FRAME_TICKS));
        self.audio_clock = Some((at, ts));
        let mut pkt = Vec::with_capacity(12 + opus.len() + 16);
        // RFC 7587 §4.1: the marker bit only after silence; continuous here.
        let h = RtpHeader { marker: false, pt: AUDIO_PT, seq: self.audio_seq, ts, ssrc: self.audio_ssrc };
        let _ = rtp::write_header(&h, &[], &mut pkt);
        pkt.extend_from_slice(opus);
        self.audio_seq = self.audio_seq.wrapping_add(1);
        let Some(tx) = self.srtp_tx.as_mut() else { return };
        if let Err(e) = tx.protect_rtp(&mut pkt) {
            self.fail(at, format!("SRTP protect: {e}"));
            return;
        }
        self.audio_sent = self.audio_sent.wrapping_add(1);
        self.audio_octets = self.audio_octets.wrapping_add(opus.len() as u32);
        self.stats.audio_packets += 1;
        self.stats.audio_bytes += pkt.len() as u64;
        self.stats.audio_frames += 1;
        self.count_sent(pkt.len());
        self.push_tx(pkt);
    }

    /// A padding-only RTP packet on the video SSRC (RFC 3550 §5.1: P set, the last
    /// padding octet counts the padding, here the whole payload).
    fn send_padding(&mut self, now: Instant) {
        const PADDING: u8 = 4;
        let mut pkt = Vec::with_capacity(12 + usize::from(PADDING) + 16);
        let h = RtpHeader { marker: false, pt: VIDEO_PT, seq: self.video_seq, ts: self.video_ts0, ssrc: self.video_ssrc };
        let _ = rtp::write_header(&h, &[], &mut pkt);
        pkt[0] |= 0x20;
        pkt.extend_from_slice(&[0, 0, 0, PADDING]);
        self.video_seq = self.video_seq.wrapping_add(1);
        let Some(tx) = self.srtp_tx.as_mut() else { return };
        if let Err(e) = tx.protect_rtp(&mut pkt) {
            self.fail(now, format!("SRTP protect: {e}"));
            return;
        }
        self.count_sent(pkt.len());
        self.push_tx(pkt);
    }

    /// One compound RTCP packet with an SR per track (RFC 3550 §6.4.1).
    fn send_sender_reports(&mut self, now: Instant) {
        let ntp = ntp_now();
        let mut out = Vec::with_capacity(128);
        for (ssrc, clock, rate, packets, octets) in [
            (self.video_ssrc, self.video_clock, VIDEO_CLOCK, self.video_sent, self.video_octets),
            (self.audio_ssrc, self.audio_clock, AUDIO_CLOCK, self.audio_sent, self.audio_octets),
        ] {
            let Some((at, ts)) = clock else { continue };
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            let rtp_ts = ts.wrapping_add((elapsed * f64::from(rate)) as u32);
            let info = SenderInfo { ssrc, ntp, rtp_ts, packets, octets };
            let _ = rtcp::write_sr(&info, &[], &mut out);
        }
        if out.is_empty() {
            return;
        }
        let Some(tx) = self.srtp_tx.as_mut() else { return };
        if tx.protect_rtcp(&mut out).is_ok() {
            self.count_sent(out.len());
            self.push_tx(out);
        }
    }

    /// A viewer's receiver report (RFC 3550 §6.4.2), from its video SSRC.
    fn send_receiver_report(&mut self, now: Instant) {
        let ssrc = self.video_ssrc;
        let Some(mut out) = self.rx.as_mut().and_then(|rx| rx.receiver_report(now, ssrc)) else { return };
        let Some(tx) = self.srtp_tx.as_mut() else { return };
        if tx.protect_rtcp(&mut out).is_ok() {
            self.count_sent(out.len());
            self.push_tx(out);
        }
    }

    fn count_sent(&mut self, len: usize) {
        self.stats.packets += 1;
        self.stats.bytes += len as u64;
    }

    fn push_tx(&mut self, d: Vec<u8>) {
        if self.tx.len() < TX_QUEUE {
            self.tx.push_back(d);
        } else {
            self.stats.tx_queue_drops += 1;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }
}

/// `POST /whip/NAME` (`endpoint` "whip") or `/whep/NAME` with the offer, `Connection: close`.
pub fn whip_post(host: &str, endpoint: &str, name: &str, offer: &str) -> Vec<u8> {
    format!(
        "POST /{endpoint}/{name} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        offer.len()
    )
    .into_bytes()
}

/// `DELETE` of a WHIP resource (RFC 9725 §4.2).
pub fn whip_delete(host: &str, location: &str) -> Vec<u8> {
    format!("DELETE {location} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A complete HTTP/1.1 response: (status, Location, body). `Ok(None)` while
/// more bytes are needed (`eof` = the server closed: whatever is there is all).
pub fn parse_http_response(buf: &[u8], eof: bool) -> Result<Option<(u16, Option<String>, String)>, String> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if eof { Err("connection closed before the HTTP response head".into()) } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "HTTP response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut length: Option<usize> = None;
    let mut location = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            } else if k.trim().eq_ignore_ascii_case("location") {
                location = Some(v.trim().to_string());
            }
        }
    }
    let body = &buf[head_end + 4..];
    let body = match length {
        Some(n) if body.len() >= n => &body[..n],
        Some(_) if !eof => return Ok(None),
        Some(_) => return Err("connection closed inside the HTTP body".into()),
        None if !eof => return Ok(None),
        None => body,
    };
    Ok(Some((status, location, String::from_utf8_lossy(body).into_owned())))
}

/// 64-bit NTP time (RFC 5905 §6) of the wall clock.
fn ntp_now() -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn next_rand(s: &mut u64) -> u64 {
    // splitmix64
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RFC 8839 §5.4 ice-chars (we use only alphanumerics).
fn ice_chars(s: &mut u64, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| ALPHABET[(next_rand(s) % ALPHABET.len() as u64) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_is_accepted_by_the_server_negotiation() {
        let id = ClientIdentity::generate().unwrap();
        let p = RtcPublisher::new("x".into(), 7);
        let offer = p.offer(&id);
        let parsed = sdp::parse_offer(&offer).unwrap();
        let neg = sdp::negotiate(&parsed, &sdp::CodecPrefs::default()).unwrap();
        let v = neg.video.unwrap();
        assert_eq!((v.pt, v.profile_level_id), (VIDEO_PT, 0x42e01f));
        assert_eq!(neg.audio.unwrap().pt, AUDIO_PT);
        assert_eq!(v.ssrc, Some(p.video_ssrc));
    }

    #[test]
    fn viewer_offer_is_accepted_by_the_server_send_negotiation() {
        let id = ClientIdentity::generate().unwrap();
        let v = RtcPublisher::new_viewer("x".into(), 7);
        let offer = v.offer(&id);
        assert!(offer.contains("a=recvonly") && !offer.contains("a=sendonly") && !offer.contains("a=ssrc"));
        let parsed = sdp::parse_offer(&offer).unwrap();
        let neg = sdp::negotiate_send(&parsed).unwrap();
        assert_eq!(neg.video.unwrap().pt, VIDEO_PT);
        assert_eq!(neg.audio.unwrap().pt, AUDIO_PT);
        assert!(!v.keyframe_pending());
    }

    #[test]
    fn http_response_parsing() {
        let r = b"HTTP/1.1 201 Created\r\nLocation: /whip/a/1\r\nContent-Length: 3\r\n\r\nv=0";
        assert_eq!(parse_http_response(&r[..20], false), Ok(None));
        assert_eq!(parse_http_response(&r[..r.len() - 1], false), Ok(None));
        assert_eq!(parse_http_response(r, false), Ok(Some((201, Some("/whip/a/1".into()), "v=0".into()))));
    }
}
