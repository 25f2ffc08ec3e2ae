//! 3,000 connections that complete the RTMP handshake and then idle: the per-address
//! budget refuses most of them at once, the idle timeout closes the rest, and all the
//! while a new player (from another address) connects and plays, and an innocent
//! player's frame rate does not drop. Then the process runs out of descriptors on
//! purpose (a hard limit of 512): accept sheds what it cannot hold and recovers by
//! itself when the attackers leave.
mod common;

use common::hostile::*;
use common::*;
use std::time::{Duration, Instant};

const ATTACK: usize = 3000;
const IDLE_SECS: u64 = 4;

/// Opens `n` connections from the attacker's address and runs the handshake on each
/// one that the server keeps; returns the ones it kept.
fn idle_attack(port: u16, n: usize) -> (Vec<RawConn>, usize) {
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match raw_connect_from(port, attacker_ip()) {
            Ok(mut c) => match c.handshake() {
                Ok(()) => kept.push(c),
                Err(_) => refused += 1,
            },
            Err(_) => refused += 1,
        }
    }
    (kept, refused)
}

#[test]
fn idle_handshaken_connections_are_refused_or_timed_out_and_players_still_play() {
    raise_fd_limit(ATTACK as u64 + 512);
    let idle = IDLE_SECS.to_string();
    let mut server = Server::start(&["--rtmp-idle-timeout", &idle]);
    let mut innocent = Innocent::start(&server, "innocent");

    let t_attack = Instant::now();
    let (mut kept, refused) = idle_attack(server.rtmp_port, ATTACK);
    let per_ip = 256;
    assert!(kept.len() <= per_ip, "{} idle connections from one address kept (budget {per_ip})", kept.len());
    assert!(refused >= ATTACK - per_ip, "only {refused} refused");
    let m = server.metrics();
    assert!(m.sum("rtcbridge_connections_refused_total") >= (ATTACK - per_ip) as f64, "refusals counted");

    // While they are open: a new player connects and plays, the innocent one is unharmed.
    let mut fresh = RtmpClient::connect(server.rtmp_port);
    fresh.start_play("innocent");
    fresh
        .wait_event(0, Duration::from_secs(5), |e| matches!(e.video_kind(), Some((true, false))))
        .unwrap_or_else(|| panic!("a new player got no keyframe while the attack held its connections: {}", fresh.describe()));
    innocent.assert_unharmed(Duration::from_secs(2), "while 3000 idle connections were tried");

    // The idle timeout closes every kept one (they never published or played).
    let deadline = t_attack + Duration::from_secs(IDLE_SECS + 6);
    for c in kept.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        if let Err(e) = c.expect_closed(left) {
            panic!("an idle connection is still open {:?} after the attack began: {e}", t_attack.elapsed());
        }
    }
    wait_for(Duration::from_secs(3), "idle closes counted", || {
        server.metrics().sum("rtcbridge_idle_closed_total") >= kept.len() as f64
    });
    assert!(server.log().contains("idle: neither published nor played"), "the log names the reason");
    innocent.assert_unharmed(Duration::from_secs(2), "after the idle connections were closed");
    assert!(!fresh.closed(), "the real player was not taken for idle: {}", fresh.describe());
    server.shutdown_checked();
}

#[test]
fn out_of_descriptors_accept_sheds_and_recovers() {
    raise_fd_limit(2048);
    // The server may hold at most 512 descriptors in all (prlimit sets its hard limit).
    let mut server = Server::start_wrapped(&["prlimit", "--nofile=512:512", "--"], &["--max-conns-per-ip", "0"]);
    assert!(server.log().contains("open-file limit 512"), "the limit is logged: {}", tail(&server.log(), 5));
    let (kept, _) = idle_attack(server.rtmp_port, 700);
    assert!(kept.len() < 512, "the server cannot have kept {} connections", kept.len());
    server.wait_log_line(Duration::from_secs(5), "the out-of-descriptors warning", |l| l.contains("out of file descriptors"));
    drop(kept);
    wait_for(Duration::from_secs(10), "descriptor refusals counted once the attackers left", || {
        http_get(server.http_port, "/metrics").is_ok_and(|(code, body)| {
            code == 200 && Metrics::parse(&body).sum_where("rtcbridge_connections_refused_total", &[("reason", "no_fd")]) > 0.0
        })
    });
    // Recovered by itself: a publisher and a player work again.
    let mut innocent = Innocent::start(&server, "after");
    innocent.assert_unharmed(Duration::from_secs(2), "after running out of descriptors");
    server.shutdown_checked();
}
