//! RTMPS (`--rtmps`): RTMP over TLS with the certificate given by `--tls-cert`/`--tls-key`,
//! proven with ffmpeg (its own TLS stack, GnuTLS in Debian) on both ends:
//! - ffmpeg publishes rtmps://127.0.0.1:PORT/live/NAME;
//! - an ffmpeg player over rtmps and one over plain rtmp play it at once: H.264 and AAC,
//!   zero decode errors, at least 90% of the frames of the window;
//! - a plain RTMP handshake sent to the RTMPS port ends that connection only, with a
//!   log line naming the peer, and both players keep playing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{free_port, wait_for, FramePlayer, Publisher, Server};

const NAME: &str = "tls1";
const WINDOW: f64 = 6.0;

#[test]
fn rtmps_publish_and_play_with_ffmpeg() {
    let dir = common::scratch_dir();
    let (cert, key) = common::self_signed_pem(&dir);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server::start(&[
        "--rtmps",
        &addr,
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
    ]);
    wait_for(Duration::from_secs(5), "the rtmps port open", || TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(server.log().contains(&format!("rtmps {addr}")), "the start line names the rtmps listener: {}", server.log());

    let tls_url = format!("rtmps://127.0.0.1:{port}/live/{NAME}");
    let mut publisher = Publisher::ffmpeg(&tls_url, 1500);
    server.wait_stream_live(NAME, Duration::from_secs(15));
    let publishing = format!("publishing {NAME:?}");
    assert!(
        server.log().lines().any(|l| l.contains("rtmps 127.0.0.1:") && l.contains(&publishing)),
        "the publisher came in over rtmps: {}",
        server.log()
    );

    let t0 = Instant::now();
    let tls_player = FramePlayer::start("rtmps player", &tls_url, WINDOW);
    let plain_player = FramePlayer::start("rtmp player", &server.rtmp_url(NAME), WINDOW);
    wait_for(Duration::from_secs(5), "both players counted", || server.metrics().sum("rtcbridge_players") >= 2.0);

    // Plain RTMP (C0 = 3, C1) where TLS is expected: that connection ends, nothing else.
    let mut raw = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut c0c1 = vec![3u8];
    c0c1.resize(1537, 0);
    let _ = raw.write_all(&c0c1);
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("the server kept a plain-RTMP connection on the RTMPS port open ({got} bytes, then {e})"),
        }
    }
    assert!(got < 64, "the server answered plain RTMP on the RTMPS port with {got} bytes");
    let local = raw.local_addr().expect("local addr");
    let closed = format!("rtmps {local}: closed: read error: TLS");
    wait_for(Duration::from_secs(5), "a log line naming the plain-RTMP peer and the TLS error", || server.log().contains(&closed));

    for p in [tls_player, plain_player] {
        let label = p.label.clone();
        let res = p.finish(Duration::from_secs(20));
        let want = 0.9 * 30.0 * WINDOW;
        eprintln!(
            "{label}: {} video, {} audio frames, {} errors ({:.1} s after start)",
            res.video_count(),
            res.audio_count(),
            res.errors.len(),
            t0.elapsed().as_secs_f64()
        );
        assert!(res.errors.is_empty(), "{label}: decode errors {:?}", res.errors);
        assert!(res.video_count() as f64 >= want, "{label}: {} video frames in {WINDOW} s (want {want:.0})", res.video_count());
        assert!(res.audio_count() as f64 >= 0.9 * common::AUDIO_FPS * WINDOW, "{label}: {} audio frames", res.audio_count());
    }
    assert!(publisher.guard.is_running(), "the rtmps publisher kept publishing: {}", common::read_file_lossy(&publisher.log_path));
}

#[test]
fn rtmps_without_a_certificate_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtcbridge"))
        .args(["--rtmps", "127.0.0.1:0", "--no-pin"])
        .output()
        .expect("run rtcbridge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a certificate: {err}");
    assert!(err.contains("--rtmps needs both --tls-cert and --tls-key"), "{err}");
}
