//! nginx-rtmp as an edge pulling from us: its relay client (connect,
//! createStream, play) must get a stream that a player of nginx can decode.
mod common;

use common::*;
use std::time::{Duration, Instant};

const WINDOW: f64 = 5.0;

#[test]
fn nginx_rtmp_pulls_from_us() {
    let server = Server::start(&[]);
    let name = "edge";
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(name), 1500);
    server.wait_stream_live(name, Duration::from_secs(15));

    let nginx = Nginx::start(&format!(
        "application live {{ live on; pull rtmp://127.0.0.1:{}/live; }}",
        server.rtmp_port
    ));
    let player = FramePlayer::start("player via nginx", &nginx.url(name), WINDOW);
    // nginx's pull shows up as a player of ours.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = server.stream(name);
        if s.as_ref()
            .and_then(|s| s.get("players").and_then(|p| p.as_u64()))
            .unwrap_or(0)
            >= 1
        {
            break;
        }
        if Instant::now() >= deadline {
            panic!(
                "no player on our stream 10 s after a player asked nginx; stream {s:?}; nginx log:\n{}",
                tail(&nginx.error_log(), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = player.finish(Duration::from_secs(20));
    if r.video_count() < min_video_frames(WINDOW, 0.8) || !r.errors.is_empty() {
        eprintln!("nginx error.log tail:\n{}", tail(&nginx.error_log(), 30));
    }
    r.assert_healthy(
        min_video_frames(WINDOW, 0.8),
        min_audio_frames(WINDOW, 0.8),
        true,
    );
    assert!(
        publisher.is_running(),
        "publisher died: {}",
        publisher.log()
    );
}
