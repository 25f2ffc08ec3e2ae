//! rtc-load: M synthetic WebRTC publishers over WHIP and N viewers over WHEP
//! in one process, one mio loop; an SRTP decrypt micro-benchmark
//! (`--bench-srtp`); and the UDP floor of WebRTC fan-out (`--floor-send`,
//! `--floor-recv`, see [`floor`]), for perf/.
//!
//! Each publisher POSTs an SDP offer to `/whip/NAME` (NAME-i for i > 0), runs
//! ICE against the server's ICE-lite candidates, a DTLS client handshake, and
//! then sends SRTP: H.264 at `--fps` (RFC 6184 packetization, every access
//! unit with a wall-clock SEI that tools/rtmp-load's probes turn into
//! latency) and Opus every 20 ms. See [`publisher`] for the protocol side.
//!
//! Cheap by construction: the test pattern is encoded once per frame (and
//! the Opus tone once at start) for all publishers; a publisher adds only
//! its SEI, RTP headers and SRTP. One timer paces all publishers: frames
//! that are due are sent, a late loop skips frames rather than bursting.
//!
//! WHEP viewers (`--whep-viewers N`) are the same client with a receiver
//! ([`viewer`]): a recvonly offer to `/whep/NAME`, ICE, DTLS, then every SRTP
//! packet is decrypted, parsed and depacketized, and each access unit's SEI
//! gives publisher → viewer latency. They share the loop with the publishers.
//!
//! Output: one JSON summary on stdout (see `summary`); diagnostics on stderr.

// rtmp-load's FLV reader: the viewers read the wall-clock SEI with it.
#[allow(dead_code)]
#[path = "../../rtmp-load/src/flv.rs"]
mod flv;
mod floor;
mod h264;
mod media;
mod publisher;
#[path = "../../common/report.rs"]
mod report;
mod viewer;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

use rtcbridge::proto::srtp::{SrtpContext, SrtpProfile};

use media::{AudioSource, VideoParams, VideoSource, OPUS_FRAME};
use report::{cpu_times, percentiles, round3};
use publisher::{ClientIdentity, Phase, RtcPublisher, MAX_HTTP_RESPONSE, MAX_RTP_PAYLOAD};

/// A WHIP request must be answered within this.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the DELETEs at the end may take.
const DELETE_WAIT: Duration = Duration::from_secs(2);
/// One UDP receive buffer for everything.
const UDP_BUF: usize = 2048;
/// A loop more than this many frames late skips ahead instead of catching up.
const MAX_CATCH_UP_FRAMES: u64 = 2;
/// Most publishers and viewers in one process (two tokens each, one UDP socket each).
const MAX_PUBLISHERS: usize = 10_000;
/// A UDP socket's receive buffer asked for (the kernel caps it at rmem_max).
pub const UDP_RCVBUF: usize = 1 << 20;

const USAGE: &str = "usage: rtc-load --url http://HOST:PORT [--name NAME] [--publishers M] [--seconds S]
                [--kbps K] [--fps F] [--size WxH] [--gop N] [--idr-min-ms MS] [--ramp-ms MS]
                [--no-media] [--loop-gop] [--whep-viewers N [--whep-name NAME] [--viewer-ramp-ms MS]
                [--viewer-delay-ms MS]]
       rtc-load --bench-srtp [--packet-bytes N] [--iterations N] [--profile gcm|gcm256|cm]
       rtc-load --floor-send --listen ADDR --viewers N --pps P --packet-bytes B [--fps F]
                [--seconds S] [--profile gcm|gcm256|cm]
       rtc-load --floor-recv --floor-addr ADDR --viewers N [--seconds S] [--profile ...]

M synthetic WebRTC publishers in one process and one event loop. Each POSTs an SDP
offer (BUNDLE of H.264 packetization-mode=1 42e01f PT 102 and Opus/48000/2 PT 111,
rtcp-mux, DTLS actpass) to /whip/NAME, runs ICE (controlling, USE-CANDIDATE) against
the answer's host candidate (127.0.0.1 preferred), a DTLS client handshake, and sends
SRTP until the end of the run, then DELETEs its WHIP resource.

The video is a moving test pattern encoded with openh264 ONCE per frame for all
publishers: every publisher sends the same access unit with only its wall-clock SEI
(H.264 user_data_unregistered, UUID \"rtcbridge:wclk01\", 8-byte big-endian µs since the
UNIX epoch, taken when that publisher sends the frame, i.e. after the encode), RTP
sequence numbers, timestamps and SSRC differing. So M publishers cost little more CPU
than one, and a keyframe requested by the server (PLI/FIR) for one publisher is a
keyframe for all. Audio: one second of a 440 Hz Opus tone (opus-rs encoder), encoded
once at start and looped, 20 ms per packet.

  --url URL          the server's HTTP base, e.g. http://127.0.0.1:8080 (required)
  --name NAME        stream name (default rtcload); publisher i > 0 publishes NAME-i
  --publishers M     publishers (default 1)
  --seconds S        run length from the start, then one JSON summary on stdout (default 10)
  --kbps K           video target bitrate of the encoder (default 2500)
  --fps F            video frames per second (default 30)
  --size WxH         video size (default 640x360)
  --gop N            key frame every N frames (default 60), and when the server asks
  --idr-min-ms MS    a PLI/FIR forces a key frame at most this often (default 1000): the
                     encoder is shared, so every publisher's request is a key frame for
                     all; a request inside the interval is served by the next key frame.
                     (rtcbridge asks each publisher every 2 s, and after a loss)
  --ramp-ms MS       spread the M WHIP requests evenly over MS milliseconds (default 1000)
  --no-media         idle publishers: ICE and DTLS up, then no audio or video, only the
                     consent checks, an (empty) RTCP SR timer and one padding-only RTP
                     packet a second on the video SSRC (as browsers pad for bandwidth
                     probing), which keeps rtcbridge from ending the session for RTP
                     inactivity (10 s). For the cost of idle sessions (perf/README.md).

  --loop-gop         encode one GOP (--gop frames) at the start and send it in a loop
                     (a key frame request restarts it at its IDR): the run spends no CPU
                     on encoding, for many viewers in the same process (perf/play-scale).
                     The SEI is still written per frame when it is sent.
  --whep-viewers N   N WHEP viewers of --whep-name (default: --name) besides the M
                     publishers (M may be 0): each POSTs a recvonly offer (H.264
                     packetization-mode=1 42e01f PT 102, Opus PT 111) to /whep/NAME, runs
                     ICE and a DTLS client like a publisher, then receives: every SRTP
                     packet is unprotected, parsed and counted per track (sequence gaps =
                     loss), video is depacketized into access units (rtcbridge's
                     depacketizer) and each unit's wall-clock SEI gives the latency from
                     the publisher's send to the unit complete at the viewer (from each
                     viewer's second key frame: the first GOP may come from the server's
                     GOP cache). A receiver report a second; no NACK, no PLI.
  --viewer-ramp-ms MS  spread the N WHEP requests over MS milliseconds (default 1000)
  --viewer-delay-ms MS start the first viewer MS milliseconds after the start (default 0)

  --floor-send       the floor of WebRTC fan-out (see perf/play-scale): one UDP socket on
                     --listen; each of N receivers that says hello is sent --pps P packets
                     a second of --packet-bytes B on the wire, in bursts every 1/--fps s,
                     each one SRTP-protected (its own context) and sent with one sendto.
  --floor-recv       N UDP sockets that say hello to --floor-addr, then receive, unprotect
                     and count what the sender sends (as the WHEP viewers do).

  --bench-srtp       no publishers: time SrtpContext::unprotect_rtp on RTP packets of
                     --packet-bytes N bytes on the wire (default 1100) with --profile
                     (default gcm = AEAD_AES_128_GCM), --iterations N (default 200000);
                     prints one JSON object (ns per unprotect)

Summary: publishers connected/failed (with reasons), SRTP profile, connect times,
packets/bytes sent (average SRTP packet size), frames sent, PLIs/FIRs/NACKs received,
retransmissions, the tool's own CPU (user+sys from /proc/self/stat) per publisher-second
of media, and encode time per frame; with viewers, a \"viewers\" object: connected/failed,
packets, bytes, loss per track, frames and frame rate per viewer (min/median/max),
latency p50/p95/p99/max, SRTP failures, and the tool's CPU per viewer-second.";

struct Args {
    url: String,
    host: String,
    addr: SocketAddr,
    name: String,
    publishers: usize,
    seconds: f64,
    kbps: u32,
    fps: f64,
    width: usize,
    height: usize,
    gop: u32,
    idr_min_ms: u64,
    ramp_ms: u64,
    no_media: bool,
    loop_gop: bool,
    viewers: usize,
    whep_name: String,
    viewer_ramp_ms: u64,
    viewer_delay_ms: u64,
}

struct BenchArgs {
    packet_bytes: usize,
    iterations: u64,
    profile: SrtpProfile,
}

enum Mode {
    Load(Args),
    Bench(BenchArgs),
    FloorSend(floor::FloorArgs),
    FloorRecv(floor::FloorArgs),
}

fn parse_args() -> Result<Mode, String> {
    let mut a = Args {
        url: String::new(),
        host: String::new(),
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        name: "rtcload".into(),
        publishers: 1,
        seconds: 10.0,
        kbps: 2500,
        fps: 30.0,
        width: 640,
        height: 360,
        gop: 60,
        idr_min_ms: 1000,
        ramp_ms: 1000,
        no_media: false,
        loop_gop: false,
        viewers: 0,
        whep_name: String::new(),
        viewer_ramp_ms: 1000,
        viewer_delay_ms: 0,
    };
    let mut bench = false;
    let mut publishers_given = false;
    let (mut floor_send, mut floor_recv) = (false, false);
    let mut f = floor::FloorArgs::default();
    let mut b = BenchArgs { packet_bytes: 1100, iterations: 200_000, profile: SrtpProfile::AeadAes128Gcm };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: not a number: {v:?}"))
        }
        match flag.as_str() {
            "--url" => a.url = val("--url")?,
            "--name" => a.name = val("--name")?,
            "--publishers" => {
                a.publishers = num("--publishers", val("--publishers")?)?;
                publishers_given = true;
            }
            "--whep-viewers" => a.viewers = num("--whep-viewers", val("--whep-viewers")?)?,
            "--whep-name" => a.whep_name = val("--whep-name")?,
            "--viewer-ramp-ms" => a.viewer_ramp_ms = num("--viewer-ramp-ms", val("--viewer-ramp-ms")?)?,
            "--viewer-delay-ms" => a.viewer_delay_ms = num("--viewer-delay-ms", val("--viewer-delay-ms")?)?,
            "--floor-send" => floor_send = true,
            "--floor-recv" => floor_recv = true,
            "--listen" => f.addr = Some(num("--listen", val("--listen")?)?),
            "--floor-addr" => f.addr = Some(num("--floor-addr", val("--floor-addr")?)?),
            "--viewers" => f.viewers = num("--viewers", val("--viewers")?)?,
            "--pps" => f.pps = num("--pps", val("--pps")?)?,
            "--seconds" => {
                a.seconds = num("--seconds", val("--seconds")?)?;
                f.seconds = a.seconds;
            }
            "--kbps" => a.kbps = num("--kbps", val("--kbps")?)?,
            "--fps" => {
                a.fps = num("--fps", val("--fps")?)?;
                f.fps = a.fps;
            }
            "--gop" => a.gop = num("--gop", val("--gop")?)?,
            "--ramp-ms" => a.ramp_ms = num("--ramp-ms", val("--ramp-ms")?)?,
            "--idr-min-ms" => a.idr_min_ms = num("--idr-min-ms", val("--idr-min-ms")?)?,
            "--size" => {
                let v = val("--size")?;
                let (w, h) = v.split_once('x').ok_or(format!("--size: expected WxH, got {v:?}"))?;
                a.width = num("--size", w.to_string())?;
                a.height = num("--size", h.to_string())?;
            }
            "--bench-srtp" => bench = true,
            "--no-media" => a.no_media = true,
            "--loop-gop" => a.loop_gop = true,
            "--packet-bytes" => {
                b.packet_bytes = num("--packet-bytes", val("--packet-bytes")?)?;
                f.packet_bytes = b.packet_bytes;
            }
            "--iterations" => b.iterations = num("--iterations", val("--iterations")?)?,
            "--profile" => {
                b.profile = match val("--profile")?.as_str() {
                    "gcm" => SrtpProfile::AeadAes128Gcm,
                    "gcm256" => SrtpProfile::AeadAes256Gcm,
                    "cm" => SrtpProfile::Aes128CmSha1_80,
                    other => return Err(format!("--profile: expected gcm, gcm256 or cm, got {other:?}")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    f.profile = b.profile;
    if floor_send || floor_recv {
        f.check(floor_send)?;
        return Ok(if floor_send { Mode::FloorSend(f) } else { Mode::FloorRecv(f) });
    }
    if bench {
        if b.iterations == 0 || b.iterations > 1 << 32 {
            return Err("--iterations: must be 1..2^32".into());
        }
        if !(64..=1400).contains(&b.packet_bytes) {
            return Err("--packet-bytes: must be 64..=1400".into());
        }
        return Ok(Mode::Bench(b));
    }
    if a.url.is_empty() {
        return Err("--url is required".into());
    }
    let rest = a.url.strip_prefix("http://").ok_or_else(|| format!("--url {}: expected http://HOST:PORT", a.url))?;
    let hostport = rest.split('/').next().unwrap_or("");
    let hp = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    a.addr = hp
        .to_socket_addrs()
        .map_err(|e| format!("--url {hp}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {hp}: no address"))?;
    a.host = hostport.to_string();
    if a.name.is_empty() || a.name.contains(['/', ' ', '?', '#']) {
        return Err(format!("--name {:?}: must be non-empty without '/', ' ', '?', '#'", a.name));
    }
    if a.viewers > 0 && !publishers_given {
        a.publishers = 0;
    }
    if a.whep_name.is_empty() {
        a.whep_name = a.name.clone();
    }
    if a.whep_name.contains(['/', ' ', '?', '#']) {
        return Err(format!("--whep-name {:?}: must not contain '/', ' ', '?', '#'", a.whep_name));
    }
    if a.publishers + a.viewers == 0 || a.publishers + a.viewers > MAX_PUBLISHERS {
        return Err(format!("--publishers + --whep-viewers: must be 1..={MAX_PUBLISHERS}"));
    }
    if !(a.seconds > 0.0 && a.seconds < 1e6) {
        return Err("--seconds: must be > 0".into());
    }
    if !(1.0..=120.0).contains(&a.fps) {
        return Err("--fps: must be 1..=120".into());
    }
    if !(16..=4096).contains(&a.width) || !(16..=4096).contains(&a.height) {
        return Err("--size: 16..=4096 each way".into());
    }
    if a.kbps == 0 || a.kbps > 100_000 {
        return Err("--kbps: must be 1..=100000".into());
    }
    if a.gop == 0 {
        return Err("--gop: must be >= 1".into());
    }
    Ok(Mode::Load(a))
}

fn main() {
    match parse_args() {
        Ok(Mode::Load(a)) => {
            if let Err(e) = run(&a) {
                eprintln!("rtc-load: {e}");
                std::process::exit(1);
            }
        }
        Ok(Mode::FloorSend(f)) => match floor::send(&f) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("rtc-load: {e}");
                std::process::exit(1);
            }
        },
        Ok(Mode::FloorRecv(f)) => match floor::recv(&f) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("rtc-load: {e}");
                std::process::exit(1);
            }
        },
        Ok(Mode::Bench(b)) => match bench_srtp(&b) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("rtc-load: {e}");
                std::process::exit(1);
            }
        },
        Err(e) if e.is_empty() => println!("{USAGE}"),
        Err(e) => {
            eprintln!("rtc-load: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

/// An HTTP exchange in flight (WHIP POST or DELETE).
struct HttpConn {
    stream: TcpStream,
    out: Vec<u8>,
    out_off: usize,
    inbuf: Vec<u8>,
    deadline: Instant,
}

struct Slot {
    p: RtcPublisher,
    start_at: Instant,
    http: Option<HttpConn>,
    udp: Option<UdpSocket>,
    send_errors: u64,
}

fn tcp_token(i: usize) -> Token {
    Token(2 * i)
}
fn udp_token(i: usize) -> Token {
    Token(2 * i + 1)
}

fn run(args: &Args) -> Result<(), String> {
    let id = ClientIdentity::generate()?;
    let mut video = VideoSource::new(VideoParams {
        width: args.width,
        height: args.height,
        fps: args.fps,
        kbps: args.kbps,
        gop: args.gop,
    })?;
    if args.loop_gop && args.publishers > 0 && !args.no_media {
        video.start_loop()?;
    }
    let audio = AudioSource::new()?;
    let mut pz = h264::H264Packetizer::new(MAX_RTP_PAYLOAD);
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut udp_buf = vec![0u8; UDP_BUF];

    let cpu0 = cpu_times();
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(args.seconds);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let m = args.publishers;
    let n = args.viewers;
    let mut slots: Vec<Slot> = (0..m + n)
        .map(|i| {
            let seed = seed ^ ((i as u64 + 1) << 40).wrapping_mul(0x9e37_79b9);
            let (p, start_at) = if i < m {
                let name = if i == 0 { args.name.clone() } else { format!("{}-{i}", args.name) };
                let ramp = Duration::from_millis(args.ramp_ms).mul_f64(i as f64 / m as f64);
                let mut p = RtcPublisher::new(name, seed);
                p.keepalive_only = args.no_media;
                (p, t0 + ramp)
            } else {
                let j = i - m;
                let ramp = Duration::from_millis(args.viewer_ramp_ms).mul_f64(j as f64 / n as f64);
                (RtcPublisher::new_viewer(args.whep_name.clone(), seed), t0 + Duration::from_millis(args.viewer_delay_ms) + ramp)
            };
            Slot { p, start_at, http: None, udp: None, send_errors: 0 }
        })
        .collect();

    // One media clock for everyone: video frame k is due at t0 + k/fps, audio frame j at t0 + 20j ms.
    let frame_dur = Duration::from_secs_f64(1.0 / args.fps);
    let mut next_frame: u64 = 0;
    let mut next_audio: u64 = 0;
    let mut late_frames: u64 = 0;
    let idr_min = Duration::from_millis(args.idr_min_ms);
    let mut last_idr: Option<Instant> = None;
    let mut encode_errors: BTreeMap<String, u64> = BTreeMap::new();

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Start publishers whose ramp time has come.
        for (i, s) in slots.iter_mut().enumerate() {
            if s.p.phase == Phase::Idle && s.start_at <= now {
                start_whip(&mut poll, args, &id, i, s, now);
            }
        }
        // HTTP deadlines.
        for s in slots.iter_mut() {
            if s.http.as_ref().is_some_and(|h| h.deadline <= now) {
                if let Some(mut h) = s.http.take() {
                    let _ = poll.registry().deregister(&mut h.stream);
                }
                s.p.fail(now, "WHIP: no HTTP response in time");
            }
        }
        // Protocol timers.
        for s in slots.iter_mut() {
            if s.p.poll_timeout().is_some_and(|t| t <= now) {
                s.p.handle_timeout(now);
            }
            if s.p.needs_dtls() {
                s.p.begin_dtls(now, &id);
            }
        }
        // Video frames due.
        let due = t0 + frame_dur.mul_f64(next_frame as f64);
        if due <= now && !args.no_media && m > 0 {
            let behind = (now.duration_since(due).as_secs_f64() / frame_dur.as_secs_f64()) as u64;
            if behind > MAX_CATCH_UP_FRAMES {
                late_frames += behind;
                next_frame += behind;
            }
            let k = next_frame;
            next_frame += 1;
            let listening = slots.iter().any(|s| s.p.phase == Phase::Media && !s.p.is_viewer());
            if listening {
                // One encoder for all: a request is served by the next IDR, forced at most
                // every --idr-min-ms (each publisher's receiver asks on its own schedule).
                let want_idr = slots.iter().any(|s| s.p.keyframe_pending());
                let force = want_idr && last_idr.is_none_or(|t| due.saturating_duration_since(t) >= idr_min);
                match video.encode(force) {
                    Ok(Some(frame)) => {
                        if frame.idr {
                            last_idr = Some(due);
                        }
                        for s in slots.iter_mut() {
                            s.p.send_video(&frame, k, args.fps, due, &mut pz);
                        }
                    }
                    Ok(None) => *encode_errors.entry("encoder skipped a frame".into()).or_insert(0) += 1,
                    Err(e) => *encode_errors.entry(e).or_insert(0) += 1,
                }
            }
        }
        // Audio frames due.
        let adue = t0 + OPUS_FRAME * next_audio as u32;
        if adue <= now && !args.no_media && m > 0 {
            let behind = (now.duration_since(adue).as_secs_f64() / OPUS_FRAME.as_secs_f64()) as u64;
            if behind > 5 {
                next_audio += behind;
            }
            let k = next_audio;
            next_audio += 1;
            let frame = audio.frame(k);
            for s in slots.iter_mut() {
                s.p.send_audio(frame, k, adue);
            }
        }
        // Drain every publisher's datagrams.
        for s in slots.iter_mut() {
            flush_udp(s);
        }

        // Sleep until the next deadline.
        let mut wake = end;
        if !args.no_media && m > 0 {
            wake = wake.min(t0 + frame_dur.mul_f64(next_frame as f64)).min(t0 + OPUS_FRAME * next_audio as u32);
        }
        for s in &slots {
            if s.p.phase == Phase::Idle {
                wake = wake.min(s.start_at);
            }
            if let Some(t) = s.p.poll_timeout() {
                wake = wake.min(t);
            }
            if let Some(h) = &s.http {
                wake = wake.min(h.deadline);
            }
        }
        let now = Instant::now();
        let timeout = wake.saturating_duration_since(now);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("epoll_wait: {e}"));
            }
        }
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0 / 2;
            let Some(s) = slots.get_mut(i) else { continue };
            if ev.token().0 % 2 == 0 {
                http_event(&mut poll, i, s, now);
            } else {
                udp_event(s, now, &mut udp_buf);
                flush_udp(s);
            }
        }
    }

    let media_end = Instant::now();
    for s in slots.iter_mut() {
        if s.p.phase == Phase::Media {
            s.p.media_end = Some(media_end);
        }
    }
    let cpu1 = cpu_times();
    delete_all(&mut poll, &mut events, args, &mut slots);
    let mut v = summary(args, &slots[..m], &video, late_frames, &encode_errors, t0, media_end, cpu0, cpu1);
    if n > 0 {
        v["viewers"] = viewer_summary(args, &slots[m..], media_end, cpu0, cpu1);
    }
    println!("{v}");
    Ok(())
}

fn start_whip(poll: &mut Poll, args: &Args, id: &ClientIdentity, i: usize, s: &mut Slot, now: Instant) {
    s.p.phase = Phase::Signaling;
    s.p.started = Some(now);
    let offer = s.p.offer(id);
    match TcpStream::connect(args.addr) {
        Ok(mut stream) => {
            if let Err(e) = poll.registry().register(&mut stream, tcp_token(i), Interest::READABLE | Interest::WRITABLE) {
                s.p.fail(now, format!("WHIP: register: {e}"));
                return;
            }
            s.http = Some(HttpConn {
                stream,
                out: publisher::whip_post(&args.host, if s.p.is_viewer() { "whep" } else { "whip" }, &s.p.name, &offer),
                out_off: 0,
                inbuf: Vec::with_capacity(4096),
                deadline: now + HTTP_TIMEOUT,
            });
        }
        Err(e) => s.p.fail(now, format!("WHIP connect: {e}")),
    }
}

/// Write what is pending, read what is there. Returns Some(eof) when the
/// socket is done for now, Err on an I/O error.
fn http_io(h: &mut HttpConn) -> Result<bool, String> {
    while h.out_off < h.out.len() {
        match h.stream.write(&h.out[h.out_off..]) {
            Ok(0) => return Err("HTTP: write returned 0".into()),
            Ok(n) => h.out_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // Not connected yet: wait for WRITABLE.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("HTTP write: {e}")),
        }
    }
    let mut buf = [0u8; 8192];
    loop {
        match h.stream.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if h.inbuf.len() + n > MAX_HTTP_RESPONSE {
                    return Err(format!("HTTP response larger than {MAX_HTTP_RESPONSE} bytes"));
                }
                h.inbuf.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("HTTP read: {e}")),
        }
    }
}

fn http_event(poll: &mut Poll, i: usize, s: &mut Slot, now: Instant) {
    let Some(h) = s.http.as_mut() else { return };
    let res = http_io(h).and_then(|eof| publisher::parse_http_response(&h.inbuf, eof));
    let done = match res {
        Ok(None) => return,
        Ok(Some(r)) => Ok(r),
        Err(e) => Err(e),
    };
    if let Some(mut h) = s.http.take() {
        let _ = poll.registry().deregister(&mut h.stream);
    }
    if s.p.phase != Phase::Signaling {
        // A DELETE's answer: nothing to do.
        return;
    }
    match done {
        Ok((201, location, body)) => {
            if let Err(e) = s.p.handle_answer(now, &body, location) {
                s.p.fail(now, format!("WHIP: {e}"));
                return;
            }
            let Some(server) = s.p.server else { return };
            let bind: SocketAddr = if server.ip().is_loopback() {
                SocketAddr::from(([127, 0, 0, 1], 0))
            } else if server.is_ipv4() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                SocketAddr::from(([0u16; 8], 0))
            };
            let sock = UdpSocket::bind(bind).and_then(|sock| sock.connect(server).map(|()| sock));
            if let (Ok(sock), true) = (&sock, s.p.is_viewer()) {
                // A viewer receives bursts of a frame's packets: room for a few frames.
                floor::set_rcvbuf(sock, UDP_RCVBUF);
            }
            match sock {
                Ok(mut sock) => {
                    if let Err(e) = poll.registry().register(&mut sock, udp_token(i), Interest::READABLE) {
                        s.p.fail(now, format!("UDP register: {e}"));
                        return;
                    }
                    s.udp = Some(sock);
                    flush_udp(s);
                }
                Err(e) => s.p.fail(now, format!("UDP socket to {server}: {e}")),
            }
        }
        Ok((status, _, body)) => {
            let first = body.lines().next().unwrap_or("").chars().take(120).collect::<String>();
            s.p.fail(now, format!("WHIP answered {status}: {first}"));
        }
        Err(e) => s.p.fail(now, format!("WHIP: {e}")),
    }
}

fn udp_event(s: &mut Slot, now: Instant, buf: &mut [u8]) {
    let Some(sock) = s.udp.as_ref() else { return };
    loop {
        match sock.recv(buf) {
            Ok(n) => s.p.handle_datagram(now, &mut buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ECONNREFUSED from an ICMP port unreachable: the server is gone.
            Err(e) => {
                s.send_errors += 1;
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    s.p.fail(now, "UDP: connection refused (server port closed)");
                }
                break;
            }
        }
    }
}

fn flush_udp(s: &mut Slot) {
    let Some(sock) = s.udp.as_ref() else {
        while s.p.poll_transmit().is_some() {}
        return;
    };
    while let Some(d) = s.p.poll_transmit() {
        match sock.send(&d) {
            Ok(_) => {}
            // Socket buffer full or transient error: the datagram is lost (counted), as on a network.
            Err(_) => s.send_errors += 1,
        }
    }
}

/// DELETE every WHIP resource, waiting at most DELETE_WAIT for the answers.
fn delete_all(poll: &mut Poll, events: &mut Events, args: &Args, slots: &mut [Slot]) {
    let now = Instant::now();
    let deadline = now + DELETE_WAIT;
    for (i, s) in slots.iter_mut().enumerate() {
        if let Some(mut h) = s.http.take() {
            let _ = poll.registry().deregister(&mut h.stream);
        }
        if let Some(mut u) = s.udp.take() {
            let _ = poll.registry().deregister(&mut u);
        }
        let Some(loc) = s.p.location.clone() else { continue };
        if let Ok(mut stream) = TcpStream::connect(args.addr) {
            if poll.registry().register(&mut stream, tcp_token(i), Interest::READABLE | Interest::WRITABLE).is_ok() {
                s.http = Some(HttpConn {
                    stream,
                    out: publisher::whip_delete(&args.host, &loc),
                    out_off: 0,
                    inbuf: Vec::new(),
                    deadline,
                });
            }
        }
    }
    while slots.iter().any(|s| s.http.is_some()) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if poll.poll(events, Some(deadline - now)).is_err() {
            break;
        }
        for ev in events.iter() {
            let i = ev.token().0 / 2;
            if let Some(s) = slots.get_mut(i) {
                http_event(poll, i, s, now);
            }
        }
    }
}




#[allow(clippy::too_many_arguments)]
fn summary(
    args: &Args,
    slots: &[Slot],
    video: &VideoSource,
    late_frames: u64,
    encode_errors: &BTreeMap<String, u64>,
    t0: Instant,
    end: Instant,
    cpu0: (f64, f64),
    cpu1: (f64, f64),
) -> serde_json::Value {
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut connect_ms = Vec::new();
    let mut media_seconds = 0.0;
    let mut st = publisher::PublisherStats::default();
    let mut send_errors = 0;
    let mut profile = None;
    let mut connected = 0;
    for s in slots {
        let p = &s.p;
        send_errors += s.send_errors;
        if let Some(r) = &p.failure {
            *failures.entry(r.clone()).or_insert(0) += 1;
        } else if p.phase != Phase::Media {
            *failures.entry(format!("not connected at the end ({:?})", p.phase)).or_insert(0) += 1;
        }
        if let (Some(a), Some(b)) = (p.started, p.connected) {
            connected += 1;
            connect_ms.push(b.duration_since(a).as_secs_f64() * 1e3);
            media_seconds += p.media_end.unwrap_or(end).duration_since(b).as_secs_f64();
        }
        profile = profile.or(p.srtp_profile);
        let x = &p.stats;
        st.packets += x.packets;
        st.bytes += x.bytes;
        st.video_packets += x.video_packets;
        st.audio_packets += x.audio_packets;
        st.video_bytes += x.video_bytes;
        st.audio_bytes += x.audio_bytes;
        st.video_frames += x.video_frames;
        st.audio_frames += x.audio_frames;
        st.frames_before_idr += x.frames_before_idr;
        st.plis += x.plis;
        st.firs += x.firs;
        st.nacks += x.nacks;
        st.retransmits += x.retransmits;
        st.nacks_unanswered += x.nacks_unanswered;
        st.rtcp_received += x.rtcp_received;
        st.rtcp_bad += x.rtcp_bad;
        st.tx_queue_drops += x.tx_queue_drops;
    }
    let failed = slots.iter().filter(|s| s.p.phase != Phase::Media).count();
    let cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
    let rtp_packets = st.video_packets + st.audio_packets;
    let enc_frames = video.frames.max(1) as f64;
    json!({
        "url": args.url,
        "name": args.name,
        "publishers": args.publishers,
        "connected": connected,
        "failed": failed,
        "failures": failures,
        "srtp_profile": profile.map(|p| format!("{p:?}")),
        "connect_ms": percentiles(&connect_ms, &[50, 95]),
        "seconds": round3(end.duration_since(t0).as_secs_f64()),
        "media_publisher_seconds": round3(media_seconds),
        "video": {"size": format!("{}x{}", args.width, args.height), "fps": args.fps, "kbps_target": args.kbps, "gop": args.gop, "idr_min_ms": args.idr_min_ms},
        "packets_sent": st.packets,
        "bytes_sent": st.bytes,
        "rtp_packets_sent": rtp_packets,
        "video_packets_sent": st.video_packets,
        "audio_packets_sent": st.audio_packets,
        "rtp_bytes_sent": st.video_bytes + st.audio_bytes,
        "avg_rtp_packet_bytes": if rtp_packets > 0 { round3((st.video_bytes + st.audio_bytes) as f64 / rtp_packets as f64) } else { 0.0 },
        "video_frames_sent": st.video_frames,
        "audio_frames_sent": st.audio_frames,
        "frames_skipped_before_first_idr": st.frames_before_idr,
        "frames_encoded": video.frames,
        "idrs_encoded": video.idrs,
        "encoded_kbps": if end > t0 { round3(video.bytes as f64 * 8.0 / 1000.0 / end.duration_since(t0).as_secs_f64()) } else { 0.0 },
        "encode_ms_per_frame": {"mean": round3(video.encode_time.as_secs_f64() * 1e3 / enc_frames), "max": round3(video.encode_max.as_secs_f64() * 1e3)},
        "late_frames_skipped": late_frames,
        "encoder_problems": encode_errors,
        "plis_received": st.plis,
        "firs_received": st.firs,
        "nacks_received": st.nacks,
        "retransmitted": st.retransmits,
        "nacks_unanswered": st.nacks_unanswered,
        "rtcp_received": st.rtcp_received,
        "rtcp_undecryptable": st.rtcp_bad,
        "send_errors": send_errors,
        "tx_queue_drops": st.tx_queue_drops,
        "cpu_seconds": {"user": round3(cpu1.0 - cpu0.0), "sys": round3(cpu1.1 - cpu0.1)},
        "cpu_ms_per_publisher_second": if media_seconds > 0.0 { round3(cpu * 1e3 / media_seconds) } else { 0.0 },
    })
}

/// The WHEP viewers' part of the summary.
fn viewer_summary(args: &Args, slots: &[Slot], end: Instant, cpu0: (f64, f64), cpu1: (f64, f64)) -> serde_json::Value {
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let (mut connect_ms, mut join_ms, mut fps, mut frames, mut kbps) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut latency, mut first_gop) = (Vec::new(), Vec::new());
    let mut st = viewer::ViewerStats::default();
    let (mut v_pk, mut v_bytes, mut v_lost, mut v_exp, mut v_late, mut v_gaps) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut a_pk, mut a_bytes, mut a_lost, mut a_exp) = (0u64, 0u64, 0u64, 0u64);
    let (mut connected, mut media_seconds, mut send_errors, mut rtcp_received) = (0u64, 0.0, 0u64, 0u64);
    for s in slots {
        let p = &s.p;
        send_errors += s.send_errors;
        rtcp_received += p.stats.rtcp_received;
        if let Some(r) = &p.failure {
            *failures.entry(r.clone()).or_insert(0) += 1;
        } else if p.phase != Phase::Media {
            *failures.entry(format!("not connected at the end ({:?})", p.phase)).or_insert(0) += 1;
        }
        let (Some(a), Some(b), Some(rx)) = (p.started, p.connected, p.rx.as_deref()) else { continue };
        connected += 1;
        connect_ms.push(b.duration_since(a).as_secs_f64() * 1e3);
        let until = p.media_end.unwrap_or(end);
        let secs = until.saturating_duration_since(b).as_secs_f64();
        media_seconds += secs;
        frames.push(rx.stats.frames as f64);
        if secs > 0.0 {
            kbps.push((rx.video.bytes + rx.audio.bytes) as f64 * 8.0 / 1e3 / secs);
        }
        if let Some(f) = rx.first_frame {
            join_ms.push(f.saturating_duration_since(b).as_secs_f64() * 1e3);
        }
        // Frame rate from the second key frame on (the first GOP may come as a burst
        // from the server's GOP cache), up to the end of the run.
        fps.push(match rx.steady_since {
            Some(t) if until > t => rx.steady_frames.saturating_sub(1) as f64 / until.duration_since(t).as_secs_f64(),
            _ => 0.0,
        });
        latency.extend_from_slice(&rx.latency_ms);
        first_gop.extend_from_slice(&rx.first_gop_latency_ms);
        let x = &rx.stats;
        st.srtp_errors += x.srtp_errors;
        st.unknown_pt += x.unknown_pt;
        st.frames += x.frames;
        st.keyframes += x.keyframes;
        st.stamped += x.stamped;
        st.depack_dropped += x.depack_dropped;
        st.units_lost += x.units_lost;
        st.reports_sent += x.reports_sent;
        (v_pk, v_bytes, v_lost, v_exp) = (v_pk + rx.video.packets, v_bytes + rx.video.bytes, v_lost + rx.video.lost(), v_exp + rx.video.expected());
        (v_late, v_gaps) = (v_late + rx.video.late, v_gaps + rx.video.gaps);
        (a_pk, a_bytes, a_lost, a_exp) = (a_pk + rx.audio.packets, a_bytes + rx.audio.bytes, a_lost + rx.audio.lost(), a_exp + rx.audio.expected());
    }
    let spread = |v: &[f64]| {
        let mut j = percentiles(v, &[50]);
        if let Some(min) = v.iter().copied().min_by(f64::total_cmp) {
            j["min"] = json!(round3(min));
        }
        j
    };
    let pct = |lost: u64, expected: u64| if expected > 0 { round3(lost as f64 * 100.0 / expected as f64) } else { 0.0 };
    let cpu = (cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1);
    json!({
        "name": args.whep_name,
        "requested": args.viewers,
        "connected": connected,
        "failed": slots.iter().filter(|s| s.p.phase != Phase::Media).count(),
        "failures": failures,
        "srtp_profile": slots.iter().find_map(|s| s.p.srtp_profile).map(|p| format!("{p:?}")),
        "connect_ms": percentiles(&connect_ms, &[50, 95]),
        "join_to_first_frame_ms": percentiles(&join_ms, &[50, 95]),
        "media_viewer_seconds": round3(media_seconds),
        "video_packets": v_pk,
        "video_bytes": v_bytes,
        "video_lost": v_lost,
        "video_loss_percent": pct(v_lost, v_exp),
        "video_late": v_late,
        "video_gaps": v_gaps,
        "audio_packets": a_pk,
        "audio_bytes": a_bytes,
        "audio_lost": a_lost,
        "audio_loss_percent": pct(a_lost, a_exp),
        "avg_srtp_packet_bytes": if v_pk + a_pk > 0 { round3((v_bytes + a_bytes) as f64 / (v_pk + a_pk) as f64) } else { 0.0 },
        "srtp_errors": st.srtp_errors,
        "unknown_payload_type": st.unknown_pt,
        "frames": st.frames,
        "keyframes": st.keyframes,
        "frames_with_sei": st.stamped,
        "frames_per_viewer": spread(&frames),
        "fps_per_viewer": spread(&fps),
        "kbps_per_viewer": spread(&kbps),
        "depacketizer_dropped_packets": st.depack_dropped,
        "units_lost": st.units_lost,
        "latency_ms": percentiles(&latency, &[50, 95, 99]),
        "first_gop_latency_ms": percentiles(&first_gop, &[50, 99]),
        "rtcp_received": rtcp_received,
        "receiver_reports_sent": st.reports_sent,
        "socket_errors": send_errors,
        "cpu_ms_per_viewer_second": if media_seconds > 0.0 { round3(cpu * 1e3 / media_seconds) } else { 0.0 },
    })
}

/// Time `unprotect_rtp` (and `protect_rtp`) on packets of `packet_bytes` on the
/// wire. A receive context accepts each index once (replay protection), so a
/// ring of distinct packets is protected up front and replayed into a fresh
/// receive context per pass; context creation (key derivation) and the copy
/// into the scratch buffer are timed separately and left out of the result.
fn bench_srtp(b: &BenchArgs) -> Result<serde_json::Value, String> {
    const RING: usize = 4096;
    let p = b.profile;
    let key: Vec<u8> = (0..p.key_len()).map(|i| (i * 7 + 3) as u8).collect();
    let salt: Vec<u8> = (0..p.salt_len()).map(|i| (i * 13 + 1) as u8).collect();
    let mut tx = SrtpContext::new(p, &key, &salt).map_err(|e| format!("SRTP: {e}"))?;
    let payload = b.packet_bytes.checked_sub(12 + p.rtp_overhead()).ok_or("--packet-bytes too small")?;
    let mut ring: Vec<Vec<u8>> = Vec::with_capacity(RING);
    for i in 0..RING {
        let mut pkt = Vec::with_capacity(b.packet_bytes);
        let h = rtcbridge::proto::rtp::RtpHeader { marker: false, pt: 102, seq: i as u16, ts: 3000 * i as u32, ssrc: 0x1234_5678 };
        rtcbridge::proto::rtp::write_header(&h, &[], &mut pkt).map_err(|e| format!("RTP: {e}"))?;
        pkt.extend((0..payload).map(|k| (k ^ i) as u8));
        tx.protect_rtp(&mut pkt).map_err(|e| format!("SRTP protect: {e}"))?;
        ring.push(pkt);
    }
    let mut scratch = vec![0u8; b.packet_bytes];
    let mut unprotect = Duration::ZERO;
    let mut copy = Duration::ZERO;
    let mut done = 0u64;
    while done < b.iterations {
        let mut rx = SrtpContext::new(p, &key, &salt).map_err(|e| format!("SRTP: {e}"))?;
        let n = (b.iterations - done).min(RING as u64) as usize;
        let t = Instant::now();
        for pkt in &ring[..n] {
            scratch.copy_from_slice(pkt);
            std::hint::black_box(&mut scratch);
        }
        copy += t.elapsed();
        let t = Instant::now();
        for pkt in &ring[..n] {
            scratch.copy_from_slice(pkt);
            let len = rx.unprotect_rtp(&mut scratch).map_err(|e| format!("SRTP unprotect: {e}"))?;
            std::hint::black_box(len);
        }
        unprotect += t.elapsed();
        done += n as u64;
    }
    let per = unprotect.saturating_sub(copy).as_nanos() as f64 / b.iterations as f64;
    Ok(json!({
        "bench": "srtp",
        "profile": format!("{p:?}"),
        "packet_bytes": b.packet_bytes,
        "iterations": b.iterations,
        "ns_per_unprotect": round3(per),
    }))
}
