//! Supervision (README "Supervision"): a worker that stops turning its loop makes
//! /healthz unhealthy, naming the worker, and healthy again when it turns; a panic in a
//! worker aborts the whole process (for the service manager to restart) with a log line
//! naming the worker, never leaving a half-dead server that answers `ok`. Driven by the
//! testing-only fault trigger (`--debug-faults`).
mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// /healthz through fresh connections until one lands on a worker that answers (a
/// stalled worker's connections hang: short timeouts, retried).
fn health(server: &Server) -> Option<(u16, String)> {
    for _ in 0..20 {
        if let Ok(r) = http_get_timeout(server.http_port, "/healthz", Duration::from_millis(300)) {
            return Some(r);
        }
    }
    None
}

fn post(server: &Server, path: &str) -> u16 {
    for _ in 0..20 {
        if let Ok((code, _)) = http_request_timeout(server.http_port, "POST", path, Duration::from_millis(500)) {
            return code;
        }
    }
    panic!("POST {path}: no answer");
}

#[test]
fn a_stalled_worker_is_reported_and_a_panic_aborts_the_process() {
    let mut server = Server::start(&["--workers", "2", "--debug-faults"]);
    assert_eq!(health(&server).map(|r| r.0), Some(200));
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url("s"), 600);
    server.wait_stream_live("s", Duration::from_secs(10));

    // Stall worker 1 for 8 s: /healthz (served by worker 0) says so, then recovers.
    assert_eq!(post(&server, "/debug/fault/stall?worker=1&secs=8"), 202);
    let t = Instant::now();
    let body = wait_for_value(Duration::from_secs(8), "/healthz to report the stall", || {
        health(&server).filter(|(c, _)| *c == 503).map(|(_, b)| b)
    });
    assert!(body.contains("worker 1 has not turned its loop"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(7), "reported only after {:?}", t.elapsed());
    wait_for(Duration::from_secs(12), "healthy again after the stall", || health(&server).is_some_and(|r| r.0 == 200));

    // A panic in worker 0: the process aborts, and says which worker and why.
    assert_eq!(post(&server, "/debug/fault/panic?worker=0"), 202);
    let status = wait_for_value(Duration::from_secs(5), "the process to abort", || server.try_exit_status());
    assert_eq!(status.signal(), Some(libc::SIGABRT), "exit {status:?}");
    let log = server.log();
    assert!(log.contains("worker 0 panicked: debug fault: panic requested for worker 0"), "{}", tail(&log, 10));
    assert!(log.contains("aborting the process"), "{}", tail(&log, 10));
    publisher.kill();
}
