//! Hostile RTMP input (tests/py/hostile.py, raw sockets): an 8 MB AMF command of nulls
//! on one and on four connections at once, a ping flood that never reads, a window
//! acknowledgement size of 1. Each attack connection is ended by the server, its memory
//! peak stays within the bounds, and an innocent ffmpeg publisher and player
//! keep their frame rate.
mod common;

use common::hostile::*;
use common::*;
use std::process::Command;
use std::time::Duration;

/// Runs one attack; returns its JSON lines. Asserts it says every connection was closed
/// by the server (exit status 0).
fn attack(server: &Server, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/hostile.py");
    let port = server.rtmp_port.to_string();
    let pid = server.pid().to_string();
    let out = Command::new("python3")
        .arg(script)
        .arg(args[0])
        .args(["127.0.0.1", &port])
        .args(&args[1..])
        .args(["--pid", &pid])
        .output()
        .expect("python3 tests/py/hostile.py");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: not every attack connection was closed by the server ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs `args` with the peak-RSS mark reset first; returns the peak's growth in KiB.
fn peak_growth(server: &Server, args: &[&str]) -> u64 {
    let pid = server.pid();
    let before = server.rss_kib();
    reset_peak_rss(pid);
    attack(server, args);
    peak_rss_kib(pid).saturating_sub(before)
}

#[test]
fn amf_nulls_ping_floods_and_tiny_windows_are_ended_within_their_bounds() {
    let server = Server::start(&[]);
    let mut innocent = Innocent::start(&server, "innocent");

    let one = peak_growth(&server, &["amf-nulls", "--conns", "1", "--mb", "8"]);
    assert!(one <= 32 * 1024, "one 8 MB AMF command of nulls: RSS peak +{one} KiB (limit 32 MiB)");
    let four = peak_growth(&server, &["amf-nulls", "--conns", "4", "--mb", "8"]);
    assert!(four <= 32 * 1024, "four at once: RSS peak +{four} KiB (limit 32 MiB)");
    assert!(server.log().contains("exceeds"), "the log names the oversized command: {}", tail(&server.log(), 5));
    innocent.assert_unharmed(Duration::from_secs(2), "after the AMF attacks");

    let flood = peak_growth(&server, &["ping-flood", "--seconds", "10"]);
    assert!(flood <= 16 * 1024, "ping flood that never reads: RSS peak +{flood} KiB (limit 16 MiB)");
    let amf_flood = peak_growth(&server, &["ping-flood", "--seconds", "10", "--amf"]);
    assert!(amf_flood <= 16 * 1024, "AMF ping flood: RSS peak +{amf_flood} KiB (limit 16 MiB)");
    let window = peak_growth(&server, &["tiny-window", "--seconds", "10"]);
    assert!(window <= 16 * 1024, "window ack size 1: RSS peak +{window} KiB (limit 16 MiB)");
    innocent.assert_unharmed(Duration::from_secs(2), "after the floods");
    let m = server.metrics();
    assert!(m.sum("rtcbridge_protocol_errors_total") >= 5.0, "each attack counted as a protocol error");
}
