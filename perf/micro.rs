//! Micro-benchmarks of the hot paths, with a tiny harness of our own (no criterion).
//!
//! Run all cases, or only those whose name contains one of the filters:
//!
//!     cargo bench --bench micro
//!     cargo bench --bench micro -- srtp fanout
//!
//! Harness: every case is a closure that runs `iters` operations and returns the time
//! spent in the measured part. The batch size is grown until one batch takes >= 2 ms,
//! batches run ~0.2 s as warm-up, then for ~1 s; the line printed is the MEDIAN of the
//! batches' ns/op. `Instant::now()` is read twice per batch (or per sub-batch, see SRTP),
//! which adds well under 1 ns per operation. Output, one line per case:
//!
//!     name  ns/op  ops/s  [MB/s]
//!
//! Cases (all on one thread unless the name says `2thr`):
//!
//! - `h264/...` H264Depacketizer: one op = one access unit pushed packet by packet
//!   (consecutive sequence numbers, marker on the last packet) and drained with
//!   take_config/take_unit (the unit's FLV body is dropped, i.e. its allocation is
//!   freed in the loop). `idr12k`: STAP-A(SPS,PPS) + a 12 KiB IDR slice as FU-A at
//!   1200-byte payloads; `p3k`: a 3 KiB P slice as FU-A. The `/pkt` line is the same
//!   measurement divided by packets per AU. MB/s = RTP payload bytes in.
//! - `srtp/<profile>/<len>` SrtpContext::unprotect_rtp of an RTP packet of `len` bytes
//!   (24-byte header with a one-byte-header extension, then payload; the tag comes on
//!   top). 256 packets with consecutive sequence numbers are protected once in setup.
//!   For every sub-batch of 256 a fresh receive context is made and the protected bytes
//!   are copied back over the work buffers, both OUTSIDE the timed part; timed is only
//!   unprotect in place (auth check, replay check, decrypt). MB/s = RTP bytes.
//! - `chunk/...` RTMP chunking of a 10 KiB video message at chunk size 4096:
//!   `encode` = ChunkEncoder::encode of the whole message (what every player would cost
//!   without sharing), `prechunk` = the shared body built once per message,
//!   `first_header` = ChunkEncoder::write_first_header (the per-player part of the
//!   fan-out path), `fanout_n100` = prechunk once + 100 headers, per player.
//! - `fanout/<kind>/n<N>` the worker's local delivery path with the real types: per
//!   message through CoreRelay::handle_frame (freeze, GOP cache, per-player decision;
//!   the RTMP body chunked once, lazily), then per player RtmpSession::queue_media into its SendQueue,
//!   and SendQueue::write_to(std::io::sink()) (the writev replaced by a sink that takes
//!   everything; so no kernel copy). One op = one message to one player:
//!   ns/op = time per message / N. Video: 10 KiB messages, a keyframe every 60.
//!   MB/s = bytes queued to players (shared, not copied: an upper bound for user space).
//! - `mesh/...` the cross-worker ring (runtime::mesh, 2 meshes, real mio Wakers):
//!   `send+drain`: Mesh::send of a CoreMsg::Media then Mesh::drain of it, including the
//!   two Arc clones the worker makes per message and the drops on the receive side;
//!   `turn32`: 32 sends, one Mesh::flush (rings the peer's eventfd Waker) and one drain,
//!   per message; `2thr/pingpong`: a message to a busy-polling thread and back, per
//!   round trip; `2thr/stream`: messages per second from one thread to another
//!   busy-polling one (a full ring drops the message and the sender retries, as
//!   media would be dropped in the server). The 2-thread cases spin on both cores
//!   (yielding after 2000 empty polls): numbers from a loaded machine are meaningless.
//! - `aac_to_opus/stereo_<44|48>k` AacToOpus::push_flv per AAC frame of music-like audio
//!   (a chord with harmonics and noise: a pure tone would take the Opus encoder's tone
//!   shortcut past its pitch search) (fdk-aac decode, resampling 44.1 → 48 kHz where
//!   needed, opus-rs encode at 128 kbit/s), and the same
//!   scaled to 20 ms of audio (the DESIGN.md target: ≤ 100 µs per 20 ms);
//! - `opus/decode/<mono|stereo>` opus-rs OpusDecoder::decode of one 20 ms packet (a
//!   440 Hz tone encoded in setup by opus-rs at its default bitrate, 50 packets cycled);
//!   `opus_to_aac/<mono|stereo>` the WebRTC bridge's whole per-packet cost:
//!   OpusToAac::push_opus (decode, PCM queue, fdk-aac encode of each complete 1024-sample
//!   frame) and poll_frame, at 64 kbit/s per channel as the server runs it.
//! - `h264_transcode_320x240/frame` H264Transcoder::push + poll per picture of
//!   tests/fixtures/h264_high_bf2_320x240.flv (libx264 High, B-frames, 60 pictures,
//!   replayed with a 2 s offset per pass): OpenH264 decode, constrained-baseline
//!   encode at 600 kbit/s. `/decode_only` is OpenH264's decoder alone on the same
//!   access units, so encode ≈ frame − decode_only.

use std::hint::black_box;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcbridge::buf::SendQueue;
use rtcbridge::proto::flv::MediaKind;
use rtcbridge::proto::depack::h264::H264Depacketizer;
use rtcbridge::proto::depack::{Pushed, RtpView};
use rtcbridge::proto::rtmp::chunk::{prechunk, prechunked_len, ChunkEncoder};
use rtcbridge::proto::rtmp::session::RtmpSession;
use rtcbridge::proto::srtp::{SrtpContext, SrtpProfile};
use rtcbridge::relay::{Action, Backlog, CoreRelay, Frame, PlayerPolicy, Registry, RelayConfig, Sink, SinkId};
use rtcbridge::runtime::mesh::{self, CoreMsg, Mesh};

const BATCH_MIN: Duration = Duration::from_millis(2);
const WARMUP: Duration = Duration::from_millis(200);
const MEASURE: Duration = Duration::from_secs(1);

const CHUNK_SIZE: usize = 4096; // the server's default --chunk-size
const FLV_VIDEO_KEY: u8 = 0x17; // FLV VIDEODATA: keyframe, AVC
const FLV_VIDEO_INTER: u8 = 0x27; // FLV VIDEODATA: inter frame, AVC
const FLV_AAC: u8 = 0xaf; // FLV AUDIODATA: AAC, 44 kHz, 16 bit, stereo

// ---- harness ----------------------------------------------------------------

struct Bench {
    filters: Vec<String>,
}

impl Bench {
    fn wants(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Median ns per iteration of `batch(iters) -> measured time`, or None when filtered out.
    fn run(&self, name: &str, mut batch: impl FnMut(u64) -> Duration) -> Option<f64> {
        if !self.wants(name) {
            return None;
        }
        let mut iters = 1u64;
        loop {
            if batch(iters) >= BATCH_MIN || iters >= 1 << 30 {
                break;
            }
            iters *= 2;
        }
        let t0 = Instant::now();
        while t0.elapsed() < WARMUP {
            batch(iters);
        }
        let mut per_iter = Vec::new();
        let t1 = Instant::now();
        while t1.elapsed() < MEASURE || per_iter.len() < 5 {
            per_iter.push(batch(iters).as_nanos() as f64 / iters as f64);
        }
        per_iter.sort_by(f64::total_cmp);
        Some(per_iter[per_iter.len() / 2])
    }
}

/// One output line. `ns` per op; `bytes` per op for MB/s.
fn line(name: &str, ns: f64, bytes: Option<f64>) {
    let ops = 1e9 / ns;
    match bytes {
        Some(b) => println!("{name:<40} {ns:>11.1} {ops:>14.0} {:>10.1}", b * ops / 1e6),
        None => println!("{name:<40} {ns:>11.1} {ops:>14.0}"),
    }
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Deterministic filler (xorshift), so runs are comparable.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; anything not starting with '-' is a name filter.
    let filters = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let b = Bench { filters };
    println!("{:<40} {:>11} {:>14} {:>10}", "name", "ns/op", "ops/s", "MB/s");
    h264(&b);
    srtp(&b);
    chunk(&b);
    fanout(&b);
    mesh_cases(&b);
    transcode(&b);
    aac_to_opus(&b);
    h264_transcode(&b);
}

// ---- 1. H.264 depacketizer -----------------------------------------------------

// RFC 6184 payload types and FU header bits, restated for the bench's packetizer.
const STAP_A: u8 = 24; // RFC 6184 §5.7.1
const FU_A: u8 = 28; // RFC 6184 §5.8
const FU_S: u8 = 0x80;
const FU_E: u8 = 0x40;
const RTP_PAYLOAD: usize = 1200;

/// 640x360 constrained baseline SPS and its PPS (libx264), as in the depacketizer tests.
const SPS: [u8; 25] = [
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
    0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
];
const PPS: [u8; 5] = [0x68, 0xcb, 0x83, 0xcb, 0x20];

/// A slice NAL unit of `len` bytes with first_mb_in_slice = 0 (ue(v) "1" in the top bit).
fn slice_nal(idr: bool, len: usize, seed: u64) -> Vec<u8> {
    let mut n = vec![if idr { 0x65 } else { 0x41 }, 0x88];
    n.extend(noise(seed, len - 2));
    n
}

/// FU-A packets of at most RTP_PAYLOAD bytes for one NAL unit.
fn fu_a(nal: &[u8], out: &mut Vec<Vec<u8>>) {
    let (hdr, body) = (nal[0], &nal[1..]);
    let pieces: Vec<&[u8]> = body.chunks(RTP_PAYLOAD - 2).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let mut fh = hdr & 0x1f;
        if i == 0 {
            fh |= FU_S;
        }
        if i + 1 == pieces.len() {
            fh |= FU_E;
        }
        let mut p = vec![(hdr & 0xe0) | FU_A, fh];
        p.extend_from_slice(piece);
        out.push(p);
    }
}

fn idr_au() -> Vec<Vec<u8>> {
    let mut stap = vec![0x60 | STAP_A];
    for n in [&SPS[..], &PPS[..]] {
        stap.extend_from_slice(&(n.len() as u16).to_be_bytes());
        stap.extend_from_slice(n);
    }
    let mut pkts = vec![stap];
    fu_a(&slice_nal(true, 12 * 1024, 1), &mut pkts);
    pkts
}

fn p_au() -> Vec<Vec<u8>> {
    let mut pkts = Vec::new();
    fu_a(&slice_nal(false, 3 * 1024, 2), &mut pkts);
    pkts
}

struct DepackFeed {
    d: H264Depacketizer,
    seq: u64,
    ts: u64,
}

impl DepackFeed {
    /// Push one access unit and drain what it completed; returns the FLV bytes out.
    fn au(&mut self, pkts: &[Vec<u8>]) -> usize {
        self.ts += 3000; // 30 fps at 90 kHz
        let mut out = 0;
        for (i, p) in pkts.iter().enumerate() {
            let v = RtpView {
                seq: self.seq,
                ts: self.ts,
                marker: i + 1 == pkts.len(),
                payload: p,
                after_loss: false,
            };
            self.seq += 1;
            if self.d.push(v) == Pushed::Complete {
                black_box(self.d.take_config());
                while let Some(u) = self.d.take_unit() {
                    out += u.flv_body.len();
                    black_box(u);
                }
            }
        }
        out
    }
}

fn h264(b: &Bench) {
    let idr = idr_au();
    let p = p_au();
    let mut feed = DepackFeed { d: H264Depacketizer::new(), seq: 1, ts: 0 };
    // Start the stream (it waits for a keyframe) and check the AUs come out whole.
    assert!(feed.au(&idr) > 12 * 1024, "IDR access unit not emitted");
    assert!(feed.au(&p) > 3 * 1024, "P access unit not emitted");
    assert_eq!(feed.d.stats().dropped(), 0);

    for (name, au) in [("h264/idr12k", &idr), ("h264/p3k", &p)] {
        let bytes: usize = au.iter().map(Vec::len).sum();
        let ns = b.run(name, |iters| {
            timed(|| {
                for _ in 0..iters {
                    black_box(feed.au(au));
                }
            })
        });
        if let Some(ns) = ns {
            line(&format!("{name}/au"), ns, Some(bytes as f64));
            let n = au.len() as f64;
            line(&format!("{name}/pkt ({} per AU)", au.len()), ns / n, Some(bytes as f64 / n));
        }
    }
    assert_eq!(feed.d.stats().dropped(), 0, "depacketizer dropped packets during the bench");
}

// ---- 2. SRTP unprotect -------------------------------------------------------------

const SRTP_POOL: usize = 256;

/// RTP header with a one-byte-header extension (RFC 8285: 0xBEDE, 2 words), `len` bytes total.
fn rtp_packet(seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x22, 1, 2, 3, 0x31, 0, 9, 0]);
    p.extend(noise(u64::from(seq), len - p.len()));
    p
}

fn srtp(b: &Bench) {
    let profiles = [
        ("aes128cm_sha1_80", SrtpProfile::Aes128CmSha1_80),
        ("aead_aes128gcm", SrtpProfile::AeadAes128Gcm),
        ("aead_aes256gcm", SrtpProfile::AeadAes256Gcm),
    ];
    for (pname, profile) in profiles {
        let key = noise(7, profile.key_len());
        let salt = noise(8, profile.salt_len());
        let new_ctx = || SrtpContext::new(profile, &key, &salt).expect("SRTP context");
        for len in [1200usize, 160] {
            let name = format!("srtp/{pname}/{len}");
            if !b.wants(&name) {
                continue;
            }
            let plain: Vec<Vec<u8>> = (0..SRTP_POOL).map(|i| rtp_packet(1000 + i as u16, len)).collect();
            let mut tx = new_ctx();
            let protected: Vec<Vec<u8>> = plain
                .iter()
                .map(|p| {
                    let mut v = Vec::with_capacity(p.len() + profile.rtp_overhead());
                    v.extend_from_slice(p);
                    tx.protect_rtp(&mut v).expect("protect");
                    v
                })
                .collect();
            let mut work = protected.clone();
            {
                let mut rx = new_ctx();
                for (w, p) in work.iter_mut().zip(&plain) {
                    let n = rx.unprotect_rtp(w).expect("unprotect");
                    assert_eq!(&w[..n], &p[..], "SRTP round trip");
                }
            }
            let ns = b.run(&name, |iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let k = left.min(SRTP_POOL);
                    // Untimed: fresh replay state, fresh ciphertext.
                    let mut rx = new_ctx();
                    for (w, p) in work.iter_mut().zip(&protected).take(k) {
                        w.copy_from_slice(p);
                    }
                    spent += timed(|| {
                        for w in work.iter_mut().take(k) {
                            black_box(rx.unprotect_rtp(black_box(w)).is_ok());
                        }
                    });
                    left -= k;
                }
                spent
            });
            if let Some(ns) = ns {
                line(&name, ns, Some(len as f64));
            }
        }
    }
}

// ---- 3. RTMP chunk encoder ----------------------------------------------------------

const VIDEO_CSID: u32 = 6; // MediaKind::Video.csid()
const VIDEO_TYPE: u8 = 9; // RTMP message type: video
const MSID: u32 = 1;

fn chunk(b: &Bench) {
    let mut payload = vec![FLV_VIDEO_INTER, 1, 0, 0, 0];
    payload.extend(noise(3, 10 * 1024 - payload.len()));
    let len = payload.len() as f64;
    let mut enc = ChunkEncoder::new();
    enc.set_chunk_size(CHUNK_SIZE);
    let mut out = Vec::with_capacity(16 * 1024);
    let mut ts = 0u32;

    if let Some(ns) = b.run("chunk/encode/10k", |iters| {
        timed(|| {
            for _ in 0..iters {
                ts = ts.wrapping_add(33) & 0xff_ffff;
                out.clear();
                enc.encode(VIDEO_CSID, ts, VIDEO_TYPE, MSID, &payload, &mut out);
                black_box(&out);
            }
        })
    }) {
        line("chunk/encode/10k", ns, Some(len));
    }
    if let Some(ns) = b.run("chunk/prechunk/10k", |iters| {
        timed(|| {
            for _ in 0..iters {
                out.clear();
                prechunk(&payload, CHUNK_SIZE, VIDEO_CSID, &mut out);
                black_box(&out);
            }
        })
    }) {
        line("chunk/prechunk/10k", ns, Some(len));
    }
    let mut hdr = Vec::with_capacity(32);
    if let Some(ns) = b.run("chunk/first_header", |iters| {
        timed(|| {
            for _ in 0..iters {
                ts = ts.wrapping_add(33) & 0xff_ffff;
                hdr.clear();
                enc.write_first_header(VIDEO_CSID, ts, VIDEO_TYPE, MSID, payload.len() as u32, &mut hdr);
                black_box(&hdr);
            }
        })
    }) {
        line("chunk/first_header", ns, None);
    }
    const N: usize = 100;
    let mut encs: Vec<ChunkEncoder> = (0..N)
        .map(|_| {
            let mut e = ChunkEncoder::new();
            e.set_chunk_size(CHUNK_SIZE);
            e
        })
        .collect();
    if let Some(ns) = b.run("chunk/fanout_n100", |iters| {
        timed(|| {
            for _ in 0..iters {
                ts = ts.wrapping_add(33) & 0xff_ffff;
                out.clear();
                prechunk(&payload, CHUNK_SIZE, VIDEO_CSID, &mut out);
                for e in encs.iter_mut() {
                    hdr.clear();
                    e.write_first_header(VIDEO_CSID, ts, VIDEO_TYPE, MSID, payload.len() as u32, &mut hdr);
                    black_box(&hdr);
                }
                black_box(&out);
            }
        })
    }) {
        line("chunk/fanout_n100 (per player)", ns / N as f64, None);
    }
}

// ---- 4. Fan-out to N in-memory players ---------------------------------------------

struct Player {
    session: RtmpSession,
    tx: SendQueue,
}

/// The players' send queues as the relay's backlog view (sink id = index).
struct Queues<'a>(&'a [Player]);

impl Backlog for Queues<'_> {
    fn queued(&self, sink: SinkId) -> usize {
        self.0.get(sink.0 as usize).map_or(0, |p| p.tx.len())
    }
}

struct Fanout {
    relay: CoreRelay,
    name: Arc<str>,
    players: Vec<Player>,
    now: Instant,
    ts: u32,
    n_msg: u64,
    sink: io::Sink,
}

impl Fanout {
    fn new(n: usize) -> Self {
        let name: Arc<str> = "bench".into();
        let now = Instant::now();
        let cfg = RelayConfig {
            gop_cache: true,
            grace: Duration::from_secs(5),
            keyframe_every: Duration::from_secs(2),
            wait_for_unknown: true,
            // The server's defaults: --player-queue-kb 1024, --evict-after 10.
            policy: PlayerPolicy { queue_limit: 1024 * 1024, evict_after: Duration::from_secs(10) },
            coalesce: None,
            coalesce_max_bytes: 64 * 1024,
            epoch: now,
        };
        let mut relay = CoreRelay::new(0, cfg, Arc::new(Registry::default()));
        let players: Vec<Player> =
            (0..n).map(|i| Player { session: RtmpSession::new(i as u64, 0, 8 << 20, CHUNK_SIZE), tx: SendQueue::new() }).collect();
        let r = relay.reserve(&name, "rtmp").expect("free name");
        let _ = relay.handle_publish(now, r, &());
        for i in 0..n {
            let _ = relay.handle_play(now, SinkId(i as u64), Sink::Rtmp { wants_opus: false }, &name, &Queues(&players));
        }
        while relay.poll_action().is_some() {}
        Fanout { relay, name, players, now, ts: 0, n_msg: 0, sink: io::sink() }
    }

    /// What the worker does for one published message: the relay freezes, caches and
    /// decides per player; the shell queues each Send (chunk header + shared body),
    /// then (end of the loop turn) flushes every player's queue. Returns the bytes
    /// written to players.
    fn message(&mut self, kind: MediaKind, payload: &[u8]) -> usize {
        self.ts = self.ts.wrapping_add(if kind == MediaKind::Video { 33 } else { 21 });
        let frame = Frame::new(kind, self.ts, payload);
        self.relay.handle_frame(self.now, &self.name, frame, &Queues(&self.players));
        while let Some(a) = self.relay.poll_action() {
            if let Action::Send { sink, ts, frame, .. } = a {
                let Some(pl) = self.players.get_mut(sink.0 as usize) else { continue };
                let body = frame.rtmp(CHUNK_SIZE);
                pl.session.queue_media(MSID, ts, frame.kind, &body, &mut pl.tx);
            }
        }
        let mut sent = 0;
        for pl in self.players.iter_mut() {
            sent += pl.tx.write_to(&mut self.sink).unwrap_or(0);
        }
        self.n_msg += 1;
        sent
    }
}

fn fanout(b: &Bench) {
    let video = |key: bool| {
        let mut v = vec![if key { FLV_VIDEO_KEY } else { FLV_VIDEO_INTER }, 1, 0, 0, 0];
        v.extend(noise(4, 10 * 1024 - v.len()));
        v
    };
    let (key, inter) = (video(true), video(false));
    let mut audio = vec![FLV_AAC, 1];
    audio.extend(noise(5, 400 - audio.len()));

    for (kind, n) in [(MediaKind::Video, 100usize), (MediaKind::Video, 1000), (MediaKind::Audio, 1000)] {
        let kname = if kind == MediaKind::Video { "video10k" } else { "audio400" };
        let name = format!("fanout/{kname}/n{n}");
        if !b.wants(&name) {
            continue;
        }
        let mut f = Fanout::new(n);
        // Start every player on a keyframe, as after joining.
        let first = f.message(MediaKind::Video, &key);
        let per_player = 12 + prechunked_len(key.len(), CHUNK_SIZE, VIDEO_CSID); // fmt 0 header + body
        assert_eq!(first, n * per_player, "every player gets the keyframe");
        let mut bytes = 0usize;
        let mut msgs = 0usize;
        let ns = b.run(&name, |iters| {
            timed(|| {
                for _ in 0..iters {
                    let payload = match kind {
                        MediaKind::Video if f.n_msg.is_multiple_of(60) => &key,
                        MediaKind::Video => &inter,
                        _ => &audio,
                    };
                    bytes += f.message(kind, payload);
                    msgs += 1;
                }
            })
        });
        if let Some(ns) = ns {
            let per_player_bytes = bytes as f64 / (msgs * n) as f64;
            line(&format!("{name} (per player)"), ns / n as f64, Some(per_player_bytes));
        }
    }
}

// ---- 5. Cross-worker mesh ----------------------------------------------------------

fn two_meshes() -> (Mesh, Mesh, Vec<mio::Poll>) {
    let polls: Vec<mio::Poll> = (0..2).map(|_| mio::Poll::new().expect("mio::Poll")).collect();
    let wakers = polls
        .iter()
        .map(|p| Arc::new(mio::Waker::new(p.registry(), mio::Token(0)).expect("mio::Waker")))
        .collect();
    let mut m = mesh::build(2, Arc::new(wakers));
    let m1 = m.pop().expect("mesh 1");
    let m0 = m.pop().expect("mesh 0");
    (m0, m1, polls)
}

/// Busy-wait step: spin first, then yield, so that two threads that end up on one core
/// (machine busy) hand over at a yield instead of at the end of a time slice.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 2000 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn media(name: &Arc<str>, frame: &Arc<Frame>) -> CoreMsg {
    CoreMsg::Media { name: Arc::clone(name), frame: Arc::clone(frame) }
}

fn mesh_cases(b: &Bench) {
    let name: Arc<str> = "bench".into();
    let msg = Frame::new(MediaKind::Video, 0, &noise(6, 1000)).shared();
    let (mut m0, mut m1, polls) = two_meshes();
    let mut inbox = Vec::with_capacity(1024);

    if let Some(ns) = b.run("mesh/send+drain", |iters| {
        timed(|| {
            for _ in 0..iters {
                black_box(m0.send(1, media(&name, &msg)));
                m1.drain(1024, &mut inbox);
                black_box(&inbox);
                inbox.clear();
            }
        })
    }) {
        line("mesh/send+drain", ns, None);
    }
    if let Some(ns) = b.run("mesh/turn32", |iters| {
        timed(|| {
            for _ in 0..iters {
                for _ in 0..32 {
                    black_box(m0.send(1, media(&name, &msg)));
                }
                m0.flush();
                m1.drain(1024, &mut inbox);
                black_box(&inbox);
                inbox.clear();
            }
        })
    }) {
        line("mesh/turn32 (per message)", ns / 32.0, None);
    }
    drop(polls);

    if b.wants("mesh/2thr/pingpong") {
        let (mut a, mut z, _polls) = two_meshes();
        let stop = Arc::new(AtomicBool::new(false));
        let echo = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut inbox = Vec::with_capacity(64);
                let mut spins = 0;
                while !stop.load(Ordering::Relaxed) {
                    z.drain(64, &mut inbox);
                    if inbox.is_empty() {
                        backoff(&mut spins);
                    } else {
                        spins = 0;
                    }
                    for m in inbox.drain(..) {
                        z.send(0, m);
                    }
                }
            })
        };
        let mut inbox = Vec::with_capacity(64);
        let ns = b.run("mesh/2thr/pingpong", |iters| {
            timed(|| {
                for _ in 0..iters {
                    a.send(1, media(&name, &msg));
                    let mut spins = 0;
                    loop {
                        a.drain(64, &mut inbox);
                        if !inbox.is_empty() {
                            break;
                        }
                        backoff(&mut spins);
                    }
                    inbox.clear();
                }
            })
        });
        stop.store(true, Ordering::Relaxed);
        echo.join().expect("echo thread");
        if let Some(ns) = ns {
            line("mesh/2thr/pingpong (round trip)", ns, None);
        }
    }

    if b.wants("mesh/2thr/stream") {
        let (mut a, mut z, _polls) = two_meshes();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let sink = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            std::thread::spawn(move || {
                let mut inbox = Vec::with_capacity(1024);
                let mut spins = 0;
                while !stop.load(Ordering::Relaxed) {
                    z.drain(1024, &mut inbox);
                    if !inbox.is_empty() {
                        received.fetch_add(inbox.len() as u64, Ordering::Release);
                        inbox.clear();
                        spins = 0;
                    } else {
                        backoff(&mut spins);
                    }
                }
            })
        };
        let mut sent = 0u64;
        let mut dropped = 0u64;
        let ns = b.run("mesh/2thr/stream", |iters| {
            timed(|| {
                for _ in 0..iters {
                    let mut spins = 0;
                    while !a.send(1, media(&name, &msg)) {
                        dropped += 1;
                        backoff(&mut spins);
                    }
                    sent += 1;
                }
                let mut spins = 0;
                while received.load(Ordering::Acquire) < sent {
                    backoff(&mut spins);
                }
            })
        });
        stop.store(true, Ordering::Relaxed);
        sink.join().expect("sink thread");
        if let Some(ns) = ns {
            line(&format!("mesh/2thr/stream ({dropped} full-ring retries)"), ns, None);
        }
    }
}

// ---- 6. Opus → AAC ---------------------------------------------------------------

/// One second of 20 ms Opus packets of a 440 Hz tone (mono or stereo, 48 kHz), encoded
/// here with opus-rs at a browser's 32 kbit/s per channel.
fn opus_tone(channels: usize) -> Vec<Vec<u8>> {
    let mut enc = opus_rs::OpusEncoder::new(48_000, channels, opus_rs::Application::Audio).expect("opus encoder");
    let mut out = Vec::new();
    for k in 0..50usize {
        let pcm: Vec<f32> = (0..960 * channels)
            .map(|i| {
                let n = k * 960 + i / channels;
                0.25 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 48_000.0).sin()
            })
            .collect();
        let mut buf = vec![0u8; 1500];
        let len = enc.encode(&pcm, 960, &mut buf).expect("opus encode");
        buf.truncate(len);
        out.push(buf);
    }
    out
}

/// Per 20 ms Opus packet: decode alone (opus-rs), and the whole bridge (decode +
/// fdk-aac encode + FLV framing) for a mono and a stereo stream.
fn transcode(b: &Bench) {
    use rtcbridge::proto::codec::aac::OpusToAac;
    for (label, channels) in [("mono", 1u8), ("stereo", 2)] {
        let packets = opus_tone(usize::from(channels));
        let mut dec = opus_rs::OpusDecoder::new(48_000, usize::from(channels)).expect("opus decoder");
        let mut pcm = vec![0f32; 960 * usize::from(channels)];
        let mut k = 0usize;
        let name = format!("opus/decode/{label}");
        if let Some(ns) = b.run(&name, |iters| {
            timed(|| {
                for _ in 0..iters {
                    let p = &packets[k % packets.len()];
                    k += 1;
                    black_box(dec.decode(p, 960, &mut pcm).expect("decode"));
                }
            })
        }) {
            line(&format!("{name}/pkt"), ns, None);
        }
        let mut bridge = OpusToAac::new(channels, 64_000 * u32::from(channels)).expect("bridge");
        let mut ts = 0u64;
        let mut frames = 0u64;
        let name = format!("opus_to_aac/{label}");
        if let Some(ns) = b.run(&name, |iters| {
            timed(|| {
                for _ in 0..iters {
                    let p = &packets[(ts / 960) as usize % packets.len()];
                    bridge.push_opus(ts, p).expect("push");
                    ts += 960;
                    while let Some(f) = bridge.poll_frame() {
                        frames += 1;
                        black_box(f);
                    }
                }
            })
        }) {
            line(&format!("{name}/pkt"), ns, None);
        }
        assert!(frames > 0 || !b.wants(&name), "the bridge emitted no AAC");
    }
}

// ---- 7. AAC → Opus (WebRTC playback of RTMP publishers) ------------------------------

/// One second of stereo at `rate` that is not a pure tone (the Opus encoder takes a shortcut
/// for those and would look cheaper than it is for music): a three-note chord with six
/// harmonics each and a little noise, the two channels mixed differently.
fn music_like(rate: u32) -> Vec<i16> {
    let mut seed = 0x1234_5678u32;
    (0..rate as usize)
        .flat_map(|n| {
            let t = n as f64 / f64::from(rate);
            let (mut l, mut r) = (0.0, 0.0);
            for (i, f0) in [220.0f64, 277.18, 329.63].into_iter().enumerate() {
                for h in 1..=6 {
                    let v = (2.0 * std::f64::consts::PI * f0 * f64::from(h) * t + i as f64).sin() / f64::from(h * h);
                    l += v * (1.0 + i as f64) / 3.0;
                    r += v * (3.0 - i as f64) / 3.0;
                }
            }
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from(seed >> 16) / 65536.0 - 0.5;
            [(l * 4000.0 + noise * 600.0) as i16, (r * 4000.0 - noise * 600.0) as i16]
        })
        .collect()
}

/// Per AAC frame of a 44.1 kHz (resampled) and a 48 kHz stereo stream of [`music_like`]
/// audio: fdk-aac decode, resampling to 48 kHz, opus-rs encode at 128 kbit/s; also scaled
/// to 20 ms of audio.
fn aac_to_opus(b: &Bench) {
    use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
    use rtcbridge::proto::codec::aac_opus::{AacToOpus, DEFAULT_BITRATE};
    for rate in [44_100u32, 48_000] {
        let enc = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(128_000),
            sample_rate: rate,
            transport: Transport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .expect("aac encoder");
        let info = enc.info().expect("aac info");
        let mut header = vec![0xAF, 0];
        header.extend_from_slice(info.confBuf.get(..info.confSize as usize).expect("asc"));
        let pcm = music_like(rate);
        let mut frames = Vec::new();
        let mut out = vec![0u8; 4096];
        let mut fed = 0;
        while fed < pcm.len() {
            let r = enc.encode(pcm.get(fed..(fed + 2048).min(pcm.len())).expect("pcm"), &mut out).expect("aac encode");
            fed += r.input_consumed;
            if r.output_size > 0 {
                let mut body = vec![0xAF, 1];
                body.extend_from_slice(out.get(..r.output_size).expect("au"));
                frames.push(body);
            }
        }
        let mut t = AacToOpus::new(DEFAULT_BITRATE);
        t.push_flv(0, &header).expect("aac header");
        let mut k = 0u64;
        let name = format!("aac_to_opus/stereo_{}k", rate / 1000);
        let frame_ms = 1024.0 * 1000.0 / f64::from(rate);
        if let Some(ns) = b.run(&name, |iters| {
            timed(|| {
                for _ in 0..iters {
                    let f = &frames[(k as usize) % frames.len()];
                    t.push_flv((k as f64 * frame_ms) as u32, f).expect("push");
                    k += 1;
                    while let Some(p) = t.poll_packet() {
                        black_box(p);
                    }
                }
            })
        }) {
            line(&format!("{name}/aac_frame"), ns, None);
            line(&format!("{name}/per_20ms"), ns * 20.0 / frame_ms, None);
        }
    }
}

// ---- H.264 transcode (B-frames → constrained baseline) -------------------------

/// The video tags of an FLV file (FLV spec v10.1 §E.2, §E.3): (timestamp, body).
fn flv_video_tags(file: &[u8]) -> Vec<(u32, &[u8])> {
    let mut at = file.get(5..9).map_or(9, |h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize) + 4;
    let mut tags = Vec::new();
    while let Some(h) = file.get(at..at + 11) {
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let Some(body) = file.get(at + 11..at + 11 + size) else { break };
        if h[0] == 9 {
            tags.push((ts, body));
        }
        at += 11 + size + 4;
    }
    tags
}

fn h264_transcode(b: &Bench) {
    use rtcbridge::proto::codec::h264_transcode::{H264Transcoder, TranscodeConfig};
    use openh264::formats::YUVSource;
    use rtcbridge::proto::packetize::parse_avc_config;
    const PASS_MS: u32 = 2000;
    let file = include_bytes!("../tests/fixtures/h264_high_bf2_320x240.flv");
    let tags = flv_video_tags(file);
    let (header, rest) = tags.split_first().expect("fixture tags");
    // The pictures only (not the end-of-sequence tag): the steady state.
    let pictures: Vec<(u32, &[u8])> = rest.iter().copied().filter(|(_, b)| b.get(1) == Some(&1)).collect();
    let name = "h264_transcode_320x240";

    let mut t = H264Transcoder::new(TranscodeConfig { bitrate_bps: 600_000, max_fps: 30.0 }).expect("transcoder");
    t.push(0, header.1).expect("sequence header");
    let mut k = 0usize;
    if let Some(ns) = b.run(&format!("{name}/frame"), |iters| {
        timed(|| {
            for _ in 0..iters {
                let (ts, body) = pictures[k % pictures.len()];
                let pass = (k / pictures.len()) as u32;
                t.push(ts + pass * PASS_MS, body).expect("push");
                k += 1;
                while let Some(o) = t.poll() {
                    black_box(o);
                }
            }
        })
    }) {
        line(&format!("{name}/frame"), ns, None);
        let s = t.stats();
        println!("  (decoded {} encoded {} dropped {})", s.decoded, s.encoded, s.dropped);
    }

    // The decoder alone, on the same access units in Annex B form.
    let config = parse_avc_config(&header.1[5..]).expect("record");
    let mut aus: Vec<Vec<u8>> = Vec::new();
    for (i, (_, body)) in pictures.iter().enumerate() {
        let mut au = Vec::new();
        if i == 0 {
            for ps in config.sps.iter().chain(config.pps.iter()) {
                au.extend_from_slice(&[0, 0, 0, 1]);
                au.extend_from_slice(ps);
            }
        }
        let mut p = 5;
        while let Some(len) = body.get(p..p + 4) {
            let n = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(&body[p + 4..p + 4 + n]);
            p += 4 + n;
        }
        aus.push(au);
    }
    let decoder_config = openh264::decoder::DecoderConfig::new().flush_after_decode(openh264::decoder::Flush::NoFlush);
    let mut d = openh264::decoder::Decoder::with_api_config(openh264::OpenH264API::from_source(), decoder_config)
        .expect("decoder");
    let mut k = 0usize;
    if let Some(ns) = b.run(&format!("{name}/decode_only"), |iters| {
        timed(|| {
            for _ in 0..iters {
                // From the second pass on the SPS/PPS in front of the IDR are a repeat.
                if let Ok(Some(p)) = d.decode(&aus[k % aus.len()]) {
                    black_box(p.dimensions_i32());
                }
                k += 1;
            }
        })
    }) {
        line(&format!("{name}/decode_only"), ns, None);
    }
}
