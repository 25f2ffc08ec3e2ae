//! Malformed input closes only the offending connection, with a log line
//! naming the peer and the reason, and a protocol error counted; a good player
//! of a live stream on the same server does not notice.
mod common;

use common::*;
use std::time::Duration;

const WINDOW: f64 = 10.0;

fn line_names_peer(line: &str, peer: &str) -> bool {
    line.match_indices(peer)
        .any(|(i, m)| !line[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Asserts the server closes `conn`, logs `reason` with its address, and
/// counts a protocol error; returns the new error count.
fn expect_rejected(
    server: &Server,
    case: &str,
    conn: &mut RawConn,
    reason: &str,
    errors_before: f64,
) -> f64 {
    let peer = conn.local_addr();
    conn.expect_closed(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{case}: the server did not close {peer}: {e}"));
    server.wait_log_line(
        Duration::from_secs(3),
        &format!("naming {peer} and {reason:?} ({case})"),
        |l| line_names_peer(l, &peer) && l.contains(reason),
    );
    wait_for_value(
        Duration::from_secs(3),
        &format!("rtcbridge_protocol_errors_total to rise after {case}"),
        || {
            let v = server.metrics().sum("rtcbridge_protocol_errors_total");
            (v > errors_before).then_some(v)
        },
    )
}

fn handshaken(server: &Server, case: &str) -> RawConn {
    let mut c = RawConn::connect(server.rtmp_port);
    c.handshake()
        .unwrap_or_else(|e| panic!("{case}: handshake failed: {e}"));
    c
}

#[test]
fn bad_input_closes_only_that_connection() {
    let mut server = Server::start(&[]);
    let name = "victim";
    let url = server.rtmp_url(name);
    let mut publisher = Publisher::ffmpeg(&url, 1500);
    server.wait_stream_live(name, Duration::from_secs(15));
    let player = FramePlayer::start("good player", &url, WINDOW);
    wait_for(
        Duration::from_secs(5),
        "the good player to be counted",
        || server.metrics().sum("rtcbridge_players") >= 1.0,
    );
    let m = server.metrics();
    let connections_before = m.sum("rtcbridge_connections");
    let errors = m.sum("rtcbridge_protocol_errors_total");

    // (a) Not RTMP at all: an HTTP request where C0 should be.
    let mut a = RawConn::connect(server.rtmp_port);
    let mut garbage = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
    garbage.resize(1537, b'x');
    let _ = a.send(&garbage); // the server may close mid-write
    let errors = expect_rejected(
        &server,
        "(a) HTTP garbage",
        &mut a,
        "unsupported RTMP version",
        errors,
    );

    // (b) Set Chunk Size 0 after a valid handshake.
    let mut b = handshaken(&server, "(b)");
    let _ = b.send(&chunk_message(
        2,
        0,
        MSG_SET_CHUNK_SIZE,
        0,
        &0u32.to_be_bytes(),
        128,
    ));
    let errors = expect_rejected(
        &server,
        "(b) chunk size 0",
        &mut b,
        "invalid chunk size 0",
        errors,
    );

    // (c) A chunk header announcing a 16 MiB - 1 message (limit 8 MiB).
    let mut c = handshaken(&server, "(c)");
    let c_peer = c.local_addr();
    let mut bytes = chunk_header_fmt0(3, 0, 0xFF_FFFF, MSG_COMMAND_AMF0, 0);
    bytes.extend_from_slice(&[0u8; 100]);
    let _ = c.send(&bytes);
    expect_rejected(
        &server,
        "(c) huge message length",
        &mut c,
        "exceeds limit",
        errors,
    );
    let line = server.wait_log_line(Duration::from_secs(1), "with the message length", |l| {
        line_names_peer(l, &c_peer) && l.contains("exceeds limit")
    });
    assert!(
        line.contains("16777215") && line.contains("8388608"),
        "(c) log line should give the length and the limit: {line}"
    );

    // (d) A truncated chunk, then the client closes.
    let mut d = handshaken(&server, "(d)");
    let mut bytes = chunk_header_fmt0(3, 0, 200, MSG_COMMAND_AMF0, 0);
    bytes.extend_from_slice(&[
        0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't', 0x00,
    ]);
    d.send(&bytes).expect("(d) send truncated chunk");
    let _ = d.stream.shutdown(std::net::Shutdown::Both);
    drop(d);
    // The server lets go of every bad connection.
    wait_for(
        Duration::from_secs(5),
        "rtcbridge_connections back to its value before the bad clients",
        || server.metrics().sum("rtcbridge_connections") <= connections_before,
    );

    // The good player saw none of it.
    let r = player.finish(Duration::from_secs(20));
    r.assert_healthy(
        min_video_frames(WINDOW, 0.9),
        min_audio_frames(WINDOW, 0.9),
        true,
    );
    assert!(
        publisher.is_running(),
        "publisher died: {}",
        publisher.log()
    );
    assert!(
        server.is_alive(),
        "rtcbridge died; log:\n{}",
        tail(&server.log(), 30)
    );
    let (code, body) = server.get("/healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
}
