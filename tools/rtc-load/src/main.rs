//! rtc-load: M synthetic WebRTC publishers over WHIP in one process, one mio
//! loop, and an SRTP decrypt micro-benchmark (`--bench-srtp`), for perf/.
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
//! Output: one JSON summary on stdout (see `summary`); diagnostics on stderr.

#[cfg(test)]
#[path = "../../rtmp-load/src/flv.rs"]
mod flv;
mod h264;
mod media;
mod publisher;
#[path = "../../common/report.rs"]
mod report;

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
/// Most publishers in one process (two tokens each, one UDP socket each).
const MAX_PUBLISHERS: usize = 10_000;

const USAGE: &str = "usage: rtc-load --url http://HOST:PORT [--name NAME] [--publishers M] [--seconds S]
                [--kbps K] [--fps F] [--size WxH] [--gop N] [--idr-min-ms MS] [--ramp-ms MS]
                [--no-media]
       rtc-load --bench-srtp [--packet-bytes N] [--iterations N] [--profile gcm|gcm256|cm]

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

  --bench-srtp       no publishers: time SrtpContext::unprotect_rtp on RTP packets of
                     --packet-bytes N bytes on the wire (default 1100) with --profile
                     (default gcm = AEAD_AES_128_GCM), --iterations N (default 200000);
                     prints one JSON object (ns per unprotect)

Summary: publishers connected/failed (with reasons), SRTP profile, connect times,
packets/bytes sent (average SRTP packet size), frames sent, PLIs/FIRs/NACKs received,
retransmissions, the tool's own CPU (user+sys from /proc/self/stat) per publisher-second
of media, and encode time per frame.";

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
}

struct BenchArgs {
    packet_bytes: usize,
    iterations: u64,
    profile: SrtpProfile,
}

enum Mode {
    Load(Args),
    Bench(BenchArgs),
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
    };
    let mut bench = false;
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
            "--publishers" => a.publishers = num("--publishers", val("--publishers")?)?,
            "--seconds" => a.seconds = num("--seconds", val("--seconds")?)?,
            "--kbps" => a.kbps = num("--kbps", val("--kbps")?)?,
            "--fps" => a.fps = num("--fps", val("--fps")?)?,
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
            "--packet-bytes" => b.packet_bytes = num("--packet-bytes", val("--packet-bytes")?)?,
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
    if a.publishers == 0 || a.publishers > MAX_PUBLISHERS {
        return Err(format!("--publishers: must be 1..={MAX_PUBLISHERS}"));
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
    let mut slots: Vec<Slot> = (0..m)
        .map(|i| {
            let name = if i == 0 { args.name.clone() } else { format!("{}-{i}", args.name) };
            let ramp = Duration::from_millis(args.ramp_ms).mul_f64(i as f64 / m as f64);
            let mut p = RtcPublisher::new(name, seed ^ ((i as u64 + 1) << 40).wrapping_mul(0x9e37_79b9));
            p.keepalive_only = args.no_media;
            Slot {
                p,
                start_at: t0 + ramp,
                http: None,
                udp: None,
                send_errors: 0,
            }
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
        if due <= now && !args.no_media {
            let behind = (now.duration_since(due).as_secs_f64() / frame_dur.as_secs_f64()) as u64;
            if behind > MAX_CATCH_UP_FRAMES {
                late_frames += behind;
                next_frame += behind;
            }
            let k = next_frame;
            next_frame += 1;
            let listening = slots.iter().any(|s| s.p.phase == Phase::Media);
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
        if adue <= now && !args.no_media {
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
        if !args.no_media {
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
    let v = summary(args, &slots, &video, late_frames, &encode_errors, t0, media_end, cpu0, cpu1);
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
                out: publisher::whip_post(&args.host, &s.p.name, &offer),
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
