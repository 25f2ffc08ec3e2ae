//! Helpers for the hostile-client tests: attack connections from a loopback address
//! of their own, and an innocent ffmpeg publisher + player whose frame rate is watched
//! while the attack runs.

use super::*;

/// A TCP connection to 127.0.0.1:`port` from `local` (any 127.x.y.z address: the whole
/// of 127/8 is loopback), so an attacker and the innocent clients have different
/// source addresses, as they would on the internet.
pub fn raw_connect_from(port: u16, local: std::net::IpAddr) -> io::Result<RawConn> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(local, 0).into())?;
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    s.connect_timeout(&to.into(), Duration::from_secs(3))?;
    let stream: TcpStream = s.into();
    stream.set_nodelay(true).ok();
    Ok(RawConn { stream })
}

/// An attacker's source address.
pub fn attacker_ip() -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, 66])
}

/// Raise this test process's open-file limit (the attacks hold thousands of sockets).
pub fn raise_fd_limit(at_least: u64) {
    let (_, now) = rtcbridge::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    assert!(now >= at_least, "this test needs {at_least} open files; the hard limit is {now}");
}

/// An ffmpeg publisher (30 fps) and an ffmpeg player of the same stream.
pub struct Innocent {
    pub publisher: Publisher,
    pub player: LivePlayer,
    pub name: String,
}

impl Innocent {
    pub fn start(server: &Server, name: &str) -> Innocent {
        let url = server.rtmp_url(name);
        let publisher = Publisher::ffmpeg(&url, 800);
        server.wait_stream_live(name, Duration::from_secs(15));
        let player = LivePlayer::start("innocent player", &url, 600.0);
        wait_for(Duration::from_secs(10), "the innocent player's first frames", || player.video_frames() >= 15);
        Innocent { publisher, player, name: name.to_owned() }
    }

    /// Video frames the player decodes per second over `window` (sampled now).
    pub fn fps_over(&self, window: Duration) -> f64 {
        let f0 = self.player.video_frames();
        let t0 = Instant::now();
        std::thread::sleep(window);
        (self.player.video_frames() - f0) as f64 / t0.elapsed().as_secs_f64()
    }

    /// The publisher still runs and the player keeps ≥ 90% of the 30 fps over `window`.
    pub fn assert_unharmed(&mut self, window: Duration, during: &str) {
        let fps = self.fps_over(window);
        assert!(self.publisher.is_running(), "innocent publisher died {during}: {}", self.publisher.log());
        assert!(fps >= 27.0, "innocent player at {fps:.1} fps {during} (want ≥ 27 of 30)");
    }
}

/// POST a WHIP offer from `local` (a loopback address of the attacker's); returns
/// (status, body).
pub fn whip_post_from(port: u16, local: std::net::IpAddr, name: &str, sdp: &str) -> io::Result<(u16, String)> {
    let (status, _, body) = sdp_post_from(port, local, &format!("/whip/{name}"), sdp)?;
    Ok((status, body))
}

/// POST an SDP offer to `path` (`/whip/NAME`, `/whep/NAME`) from `local`; returns
/// (status, head, body).
pub fn sdp_post_from(port: u16, local: std::net::IpAddr, path: &str, sdp: &str) -> io::Result<(u16, String, String)> {
    let mut c = raw_connect_from(port, local)?;
    c.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        c.stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    )?;
    let mut resp = Vec::new();
    let _ = c.stream.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((status, head.to_owned(), body.to_owned()))
}

/// Peak resident memory of a process (VmHWM), KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reset a process's peak-RSS mark to its current RSS (`/proc/PID/clear_refs`, 5).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}
