//! 2,000 WHIP offers that never do ICE or DTLS: the budget of sessions waiting to connect
//! (256 in all, 16 per address by default) refuses the rest with a clear 503, no
//! half-open session shows as a stream, the server's memory grows by at most 50 MB, and
//! once the sessions time out (15 s) the memory is back near its start and new
//! offers are taken again. An innocent ffmpeg publisher and player are not disturbed.
mod common;

use common::hostile::*;
use common::signal::offer;
use common::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const OFFERS: usize = 2000;

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::from([127, 0, a, b])
}

#[test]
fn half_open_webrtc_sessions_are_budgeted_hidden_and_released() {
    let mut server = Server::start(&["--workers", "2"]);
    let mut innocent = Innocent::start(&server, "innocent");
    let pid = server.pid();
    let rss0 = server.rss_kib();
    reset_peak_rss(pid);
    let sdp = offer(true);

    // One address: its 17th waiting session is refused, by name of the limit.
    let mut per_ip = Vec::new();
    for i in 0..20 {
        per_ip.push(whip_post_from(server.http_port, ip(3, 1), &format!("one{i}"), &sdp).expect("post"));
    }
    let ok = per_ip.iter().filter(|r| r.0 == 201).count();
    assert_eq!(ok, 16, "statuses from one address: {:?}", per_ip.iter().map(|r| r.0).collect::<Vec<_>>());
    let refused = per_ip.iter().find(|r| r.0 == 503).expect("a 503");
    assert!(refused.1.contains("from this address"), "{:?}", refused.1);

    // Many addresses: 2,000 offers, the global budget holds.
    let t = Instant::now();
    let mut created = 0;
    let mut busy = 0;
    for i in 0..OFFERS {
        let from = ip(2, 1 + (i % 200) as u8);
        let (status, body) = whip_post_from(server.http_port, from, &format!("flood{i}"), &sdp).expect("post");
        match status {
            201 => created += 1,
            503 => {
                assert!(body.contains("Too many sessions waiting to connect"), "{body:?}");
                busy += 1;
            }
            other => panic!("offer {i}: unexpected {other} {body:?}"),
        }
    }
    assert!(created + 16 <= 256, "{created} + 16 sessions waiting: over the budget of 256");
    assert!(busy >= OFFERS - 256, "only {busy} refused");
    assert!(t.elapsed() < Duration::from_secs(60), "the flood took {:?}", t.elapsed());
    let names: Vec<String> = server.streams().iter().filter_map(|s| s["name"].as_str().map(str::to_owned)).collect();
    assert_eq!(names, vec!["innocent".to_owned()], "half-open sessions are not streams");
    let grew = peak_rss_kib(pid).saturating_sub(rss0);
    assert!(grew <= 50 * 1024, "RSS peak grew {grew} KiB over {rss0} KiB (limit 50 MiB)");
    innocent.assert_unharmed(Duration::from_secs(2), "during the WHIP flood");

    // They time out (15 s without ICE); the budget is free again and memory comes back.
    wait_for(Duration::from_secs(25), "the waiting sessions to time out", || {
        whip_post_from(server.http_port, ip(4, 1), "after", &sdp).is_ok_and(|r| r.0 == 201)
    });
    let rss1 = server.rss_kib();
    assert!(rss1 <= rss0 + 16 * 1024, "RSS {rss1} KiB after the sessions ended, {rss0} KiB before");
    innocent.assert_unharmed(Duration::from_secs(2), "after the flood");
    server.shutdown_checked();
}
