//! A publisher we did not write (str0m, sans-IO WebRTC) against our `RtcSession`, over an
//! in-memory network with seeded loss, delay and reordering, in virtual time.
//!
//! The clock is read once (`rtcbridge::runtime::now()`, see `start`); from then on time only moves
//! to the earliest of both sides' `poll_timeout`, the next datagram's arrival and the
//! next media frame, so a run of many seconds takes milliseconds and the same seed
//! gives the same run. Nothing touches a socket: the addresses are labels.
//!
//! str0m publishes H.264 (synthetic NAL units: SPS/PPS + IDR, then P frames, Annex B,
//! which str0m packetizes as FU-A) and Opus (a valid 20 ms silence packet), sendonly,
//! as the offerer; our session answers. str0m answers our NACKs with RTX and reports
//! our PLIs as `Event::KeyframeRequest`, after which its next frame is an IDR.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcbridge::proto::flv::MediaKind as FlvKind;
use rtcbridge::config::AudioMode;
use rtcbridge::proto::dtls::DtlsIdentity;
use rtcbridge::relay::webrtc::{RtcError, RtcEvent, RtcSecrets, RtcSession};
use rtcbridge::relay::StreamStats;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Where str0m "is" and where our server "is": labels on the in-memory network only.
pub const PUBLISHER: &str = "127.0.0.1:50000";
pub const SERVER: &str = "127.0.0.1:40000";

const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// A keyframe every 2 s unless one is asked for sooner.
const GOP_FRAMES: u64 = 60;
/// 640x360 baseline SPS and its PPS (the same vectors as src/proto/codec/h264.rs).
const SPS: &str = "6742c01ed900a02ff970110000030001000003003c0f162e48";
const PPS: &str = "68cb83cb20";
/// An Opus packet of 20 ms of silence (RFC 6716 §3.1 TOC 0xF8: CELT fullband 20 ms mono).
const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// Where virtual time starts: the clock, read once per test process. Every run starts
/// at this same instant, so that nothing that measures time from a process-wide epoch
/// (str0m converts instants to NTP time from one) can tell two runs of a seed apart.
fn start() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(rtcbridge::runtime::now)
}

/// xorshift64*: small, seeded, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 so that nearby seeds start far apart.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What one direction of the network does to RTP and RTCP (RFC 7983 first byte
/// 128..=191). STUN and DTLS always arrive, after `delay`: the handshake is not what
/// these tests are about, and its packet count stays fixed so a seed fixes the run.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub delay: Duration,
    /// Probability that a media datagram is lost.
    pub loss: f64,
    /// Probability that a media datagram is held back by `hold` (others overtake it).
    pub reorder: f64,
    pub hold: Duration,
}

impl Link {
    pub fn clean(delay: Duration) -> Self {
        Link { delay, loss: 0.0, reorder: 0.0, hold: Duration::ZERO }
    }
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One direction of the in-memory network.
///
/// Whether a media datagram is lost or held back is drawn from the seed and the
/// datagram's clear header (RTP: the fixed 12 bytes with SSRC and sequence number;
/// SRTCP: the first 8), plus how often that header was seen: not from its place in the
/// send order. str0m walks its streams in `HashMap` order, which differs from run to
/// run, so the order in which it emits an audio and a video packet due at the same
/// instant is not fixed; the fate of each packet is.
pub struct Net {
    link: Link,
    seed: u64,
    seen: std::collections::HashMap<u64, u64>,
    seq: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    pub sent: u64,
    pub lost: u64,
    pub held: u64,
}

impl Net {
    pub fn new(link: Link, seed: u64) -> Self {
        Net { link, seed, seen: Default::default(), seq: 0, queue: BinaryHeap::new(), sent: 0, lost: 0, held: 0 }
    }
    pub fn set_link(&mut self, link: Link) {
        self.link = link;
    }
    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        self.sent += 1;
        let media = matches!(data.first(), Some(128..=191));
        let mut at = now + self.link.delay;
        if media {
            let mut rng = self.fate(&data);
            if rng.chance(self.link.loss) {
                self.lost += 1;
                return;
            }
            if rng.chance(self.link.reorder) {
                self.held += 1;
                at += self.link.hold;
            }
        }
        self.seq += 1;
        self.queue.push(Reverse(InFlight { at, seq: self.seq, from, to, data }));
    }
    /// The generator that decides one media datagram's fate.
    fn fate(&mut self, data: &[u8]) -> Rng {
        let rtcp = matches!(data.get(1), Some(192..=223)); // RFC 5761 §4
        let header = data.get(..if rtcp { 8 } else { 12 }).unwrap_or(data);
        // FNV-1a over the clear header.
        let h = header.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
        let n = self.seen.entry(h).or_default();
        *n += 1;
        Rng::new(self.seed ^ h ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(p)| p.at)
    }
    fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        if self.next_at()? <= now {
            self.queue.pop().map(|Reverse(p)| p)
        } else {
            None
        }
    }
}

/// What both ends saw; compared whole between two runs of one seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Virtual time from the start to our `RtcEvent::Connected` and str0m's `Connected`.
    pub connected_after: Option<Duration>,
    pub str0m_connected_after: Option<Duration>,
    /// FLV messages our session emitted: video frames (keyframes among them), AAC frames.
    pub video_frames: u64,
    pub keyframes: u64,
    pub video_configs: u64,
    pub audio_frames: u64,
    pub ended: Option<RtcError>,
    pub ended_after: Option<Duration>,
    /// Datagrams our session discarded, by reason label.
    pub drops: BTreeMap<&'static str, u64>,
    /// Our `handle_timeout` calls (the session's wake-ups).
    pub session_timeouts: u64,
    /// Frames str0m was given, keyframes among them.
    pub frames_sent: u64,
    pub keyframes_sent: u64,
    /// str0m's `Event::KeyframeRequest`s (our PLIs as it understood them).
    pub keyframe_requests: u64,
    /// NACK and PLI feedback str0m counted for its video (`MediaEgressStats`).
    pub str0m_nacks_received: u64,
    pub str0m_plis_received: u64,
    /// Datagrams each way, and what the network did to them.
    pub up_sent: u64,
    pub up_lost: u64,
    pub up_held: u64,
    pub down_sent: u64,
    pub down_lost: u64,
    /// The server's stream counters (`/api/streams` webrtc block).
    pub rtp_packets: u64,
    pub rtp_lost: u64,
    pub rtp_recovered: u64,
    pub nacks: u64,
    pub plis: u64,
    pub units_dropped: u64,
}

struct Media {
    video_mid: Mid,
    audio_mid: Mid,
    video_pt: Pt,
    audio_pt: Pt,
    next_video: Instant,
    next_audio: Instant,
    frame_no: u64,
    audio_no: u64,
    keyframe_wanted: bool,
}

pub struct Peer {
    pub t0: Instant,
    pub now: Instant,
    rtc: Rtc,
    rtc_timeout: Instant,
    pub session: RtcSession,
    pub stats: Arc<StreamStats>,
    up: Net,
    down: Net,
    publisher: SocketAddr,
    server: SocketAddr,
    media: Option<Media>,
    /// Send media frames (false: an idle publisher, ICE and DTLS only).
    pub sending: bool,
    pub counters: Counters,
    pub connected: bool,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Bytes that never form a start code (no zero byte) and vary with `salt`.
fn filler(len: usize, salt: u64, out: &mut Vec<u8>) {
    out.extend((0..len as u64).map(|i| ((i.wrapping_mul(31).wrapping_add(salt * 7)) % 255 + 1) as u8));
}

/// One Annex B access unit: SPS + PPS + IDR slice, or one P slice. The slice header
/// starts with first_mb_in_slice = 0 (ue(v) "1") so each frame is one picture.
fn h264_frame(frame_no: u64, key: bool) -> Vec<u8> {
    let mut f = Vec::with_capacity(5000);
    if key {
        for nal in [hex(SPS), hex(PPS)] {
            f.extend_from_slice(&[0, 0, 0, 1]);
            f.extend_from_slice(&nal);
        }
        f.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        filler(4000, frame_no, &mut f);
    } else {
        f.extend_from_slice(&[0, 0, 0, 1, 0x41, 0x9a, 0x02]);
        filler(1500, frame_no, &mut f);
    }
    f
}

/// The first payload type our answer gives `codec` ("H264/90000", "opus/48000").
fn answered_pt(answer: &str, codec: &str) -> Pt {
    let line = answer
        .lines()
        .find(|l| l.starts_with("a=rtpmap:") && l.contains(codec))
        .unwrap_or_else(|| panic!("answer has no {codec}:\n{answer}"));
    let n: u8 = line["a=rtpmap:".len()..].split(' ').next().unwrap().parse().unwrap();
    n.into()
}

impl Peer {
    /// str0m offers sendonly H.264 + Opus; our session answers. `seed` drives both
    /// network directions; `up` is publisher → server, `down` the way back.
    pub fn new(seed: u64, up: Link, down: Link, audio: AudioMode) -> Peer {
        // str0m's randomness (SSRCs, ICE credentials, timing jitter) from the seed too.
        fastrand::seed(seed);
        let t0 = start();
        let publisher: SocketAddr = PUBLISHER.parse().unwrap();
        let server: SocketAddr = SERVER.parse().unwrap();

        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(t0);
        rtc.add_local_candidate(Candidate::host(publisher, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let video_mid = change.add_media(MediaKind::Video, Direction::SendOnly, Some("s".into()), Some("v".into()), None);
        let audio_mid = change.add_media(MediaKind::Audio, Direction::SendOnly, Some("s".into()), Some("a".into()), None);
        let (offer, pending) = change.apply().unwrap();
        let offer = offer.to_sdp_string();

        let identity = DtlsIdentity::generate().unwrap();
        let stats = Arc::new(StreamStats::default());
        let cands: [(IpAddr, u16); 1] = [(server.ip(), server.port())];
        // The runtime draws these from the OS CSPRNG; a test draws them from its seed.
        let mut secret_rng = Rng::new(seed ^ 0x05ec_7e75);
        let random: [u8; RtcSecrets::RANDOM_BYTES] = std::array::from_fn(|_| secret_rng.next() as u8);
        let session = RtcSession::new("str0m".into(), &offer, &identity, &cands, RtcSecrets::from_random(&random), t0, Arc::clone(&stats), audio)
            .unwrap_or_else(|e| panic!("our session refused str0m's offer: {e:?}\n{offer}"));
        let answer = session.answer().to_owned();
        rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

        let media = Media {
            video_mid,
            audio_mid,
            video_pt: answered_pt(&answer, "H264/90000"),
            audio_pt: answered_pt(&answer, "opus/48000"),
            next_video: t0,
            next_audio: t0,
            frame_no: 0,
            audio_no: 0,
            keyframe_wanted: true,
        };
        let mut peer = Peer {
            t0,
            now: t0,
            rtc,
            rtc_timeout: t0,
            session,
            stats,
            up: Net::new(up, seed ^ 0x5550),
            down: Net::new(down, seed ^ 0xd0d0),
            publisher,
            server,
            media: Some(media),
            sending: true,
            counters: Counters::default(),
            connected: false,
        };
        peer.drain_str0m();
        peer
    }

    pub fn set_links(&mut self, up: Link, down: Link) {
        self.up.set_link(up);
        self.down.set_link(down);
    }

    /// Drain str0m to its next timeout (its single-mutation invariant).
    fn drain_str0m(&mut self) {
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Timeout(t) => {
                    self.rtc_timeout = t;
                    return;
                }
                Output::Transmit(t) => self.up.send(self.now, t.source, t.destination, t.contents.to_vec()),
                Output::Event(e) => self.on_str0m_event(e),
            }
        }
    }

    fn on_str0m_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.counters.str0m_connected_after.get_or_insert(self.now - self.t0);
            }
            Event::KeyframeRequest(_) => {
                self.counters.keyframe_requests += 1;
                if let Some(m) = self.media.as_mut() {
                    m.keyframe_wanted = true;
                }
            }
            Event::MediaEgressStats(s) if self.media.as_ref().is_some_and(|m| m.video_mid == s.mid) => {
                self.counters.str0m_nacks_received = self.counters.str0m_nacks_received.max(s.nacks);
                self.counters.str0m_plis_received = self.counters.str0m_plis_received.max(s.plis);
            }
            _ => {}
        }
    }

    /// Send what our session queued and take its events (the worker's `rtc_drain`).
    fn drain_session(&mut self) {
        if self.session.transcode_pending() {
            self.session.handle_transcode(self.now);
        }
        while let Some((to, d)) = self.session.poll_transmit() {
            self.down.send(self.now, self.server, to, d);
        }
        while let Some(ev) = self.session.poll_event() {
            match ev {
                RtcEvent::Connected => {
                    self.connected = true;
                    self.counters.connected_after.get_or_insert(self.now - self.t0);
                }
                RtcEvent::Ended(why) => {
                    self.counters.ended_after.get_or_insert(self.now - self.t0);
                    self.counters.ended.get_or_insert(why);
                }
                RtcEvent::Media(m) => match (m.kind, m.config) {
                    (FlvKind::Video, false) => {
                        self.counters.video_frames += 1;
                        self.counters.keyframes += u64::from(m.keyframe);
                    }
                    (FlvKind::Video, true) => self.counters.video_configs += 1,
                    (FlvKind::Audio, false) => self.counters.audio_frames += 1,
                    _ => {}
                },
            }
        }
    }

    /// Give str0m the frames that are due (only once ICE and DTLS are up on its side).
    fn write_media(&mut self) {
        if !self.sending || self.counters.str0m_connected_after.is_none() {
            return;
        }
        let now = self.now;
        let Some(m) = self.media.as_mut() else { return };
        let mut frames: Vec<(Mid, Pt, Instant, MediaTime, Vec<u8>)> = Vec::new();
        while m.next_video <= now {
            let key = m.keyframe_wanted || m.frame_no % GOP_FRAMES == 0;
            m.keyframe_wanted = false;
            let ts = MediaTime::new(m.frame_no * 3000, Frequency::NINETY_KHZ);
            frames.push((m.video_mid, m.video_pt, m.next_video, ts, h264_frame(m.frame_no, key)));
            self.counters.frames_sent += 1;
            self.counters.keyframes_sent += u64::from(key);
            m.frame_no += 1;
            m.next_video += FRAME_INTERVAL;
        }
        while m.next_audio <= now {
            let ts = MediaTime::new(m.audio_no * 960, Frequency::FORTY_EIGHT_KHZ);
            frames.push((m.audio_mid, m.audio_pt, m.next_audio, ts, OPUS_SILENCE.to_vec()));
            m.audio_no += 1;
            m.next_audio += AUDIO_INTERVAL;
        }
        for (mid, pt, wallclock, ts, data) in frames {
            self.rtc.writer(mid).unwrap().write(pt, wallclock, ts, data).unwrap();
            self.drain_str0m();
        }
    }

    fn next_media_at(&self) -> Option<Instant> {
        let m = self.media.as_ref()?;
        (self.sending && self.counters.str0m_connected_after.is_some()).then(|| m.next_video.min(m.next_audio))
    }

    /// Move virtual time to the next thing that happens and let it happen.
    pub fn step(&mut self) {
        let next = [Some(self.rtc_timeout), self.session.poll_timeout(), self.up.next_at(), self.down.next_at(), self.next_media_at()]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(p) = self.up.pop_due(now) {
            let mut d = p.data;
            if let Err(why) = self.session.handle_datagram(now, p.from, &mut d) {
                *self.counters.drops.entry(why.label()).or_default() += 1;
            }
            self.drain_session();
        }
        while let Some(p) = self.down.pop_due(now) {
            let input = Input::Receive(
                now,
                Receive { proto: Protocol::Udp, source: p.from, destination: p.to, contents: p.data.as_slice().try_into().unwrap() },
            );
            self.rtc.handle_input(input).unwrap();
            self.drain_str0m();
        }
        if self.rtc_timeout <= now {
            self.rtc.handle_input(Input::Timeout(now)).unwrap();
            self.drain_str0m();
        }
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.counters.session_timeouts += 1;
            self.session.handle_timeout(now);
            self.drain_session();
        }
        self.write_media();
    }

    /// Run until `cond` holds or `limit` of virtual time has passed since the start.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Peer) -> bool) -> bool {
        while self.now - self.t0 < limit {
            if cond(self) {
                return true;
            }
            self.step();
        }
        cond(self)
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Counters with the network's and the stream's numbers filled in.
    pub fn snapshot(&self) -> Counters {
        let s = &self.stats;
        let g = StreamStats::get;
        Counters {
            up_sent: self.up.sent,
            up_lost: self.up.lost,
            up_held: self.up.held,
            down_sent: self.down.sent,
            down_lost: self.down.lost,
            rtp_packets: g(&s.rtp_packets),
            rtp_lost: g(&s.rtp_lost),
            rtp_recovered: g(&s.rtp_recovered),
            nacks: g(&s.nacks),
            plis: g(&s.plis),
            units_dropped: g(&s.units_dropped),
            ..self.counters.clone()
        }
    }
}
