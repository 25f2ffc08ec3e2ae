//! Unguessable and owned: ICE credentials, WHIP resource ids and signaling tokens come
//! from the OS CSPRNG; an attacker who knows a victim's stream name and has seen any
//! number of its own ids cannot end the victim's WHIP session; a session's own DELETE
//! succeeds whichever worker it lands on.
mod common;

use common::signal::{head_value, http_raw, offer, whip_post, WsClient};
use common::*;
use std::collections::HashSet;
use std::time::Duration;

fn sdp_attr(sdp: &str, attr: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix(attr))
        .unwrap_or_else(|| panic!("no {attr} in answer:\n{sdp}"))
        .trim()
        .to_owned()
}

/// The random part of a resource id `W-HEX`.
fn random_part(location: &str) -> (String, String) {
    let id = location.rsplit('/').next().unwrap().to_owned();
    let (w, r) = id.split_once('-').expect("id is W-RANDOM");
    assert!(w.parse::<usize>().is_ok(), "worker index first: {id}");
    (id.clone(), r.to_owned())
}

fn hex_bits(h: &str) -> Vec<bool> {
    h.chars()
        .flat_map(|c| {
            let v = c.to_digit(16).expect("hex");
            (0..4).rev().map(move |i| v >> i & 1 == 1)
        })
        .collect()
}

#[test]
fn thousand_credentials_and_ids_are_unrelated() {
    let server = Server::start(&["--max-pending-webrtc", "2000", "--max-pending-webrtc-per-ip", "0"]);
    let o = offer(true);
    let mut ufrags = HashSet::new();
    let mut pwds = HashSet::new();
    let mut ids = HashSet::new();
    let mut randoms = Vec::new();
    for i in 0..1000 {
        let (status, answer, loc) = whip_post(server.http_port, &format!("ids{i}"), &o);
        assert_eq!(status, 201, "POST {i}: {answer}");
        let ufrag = sdp_attr(&answer, "a=ice-ufrag:");
        let pwd = sdp_attr(&answer, "a=ice-pwd:");
        assert!(ufrag.len() >= 8 && pwd.len() >= 24, "short credentials {ufrag} {pwd}");
        let (id, r) = random_part(&loc.expect("Location"));
        assert_eq!(r.len(), 32, "128-bit random part: {id}");
        assert!(ufrags.insert(ufrag), "ufrag repeated");
        assert!(pwds.insert(pwd), "pwd repeated");
        assert!(ids.insert(id), "resource id repeated");
        randoms.push(r);
    }
    // No relation between consecutive draws: each pair differs in about half its bits
    // (a counter or an LCG step would differ in a few), and every bit position is set
    // in about half of the ids.
    let bits: Vec<Vec<bool>> = randoms.iter().map(|r| hex_bits(r)).collect();
    let mut min_dist = usize::MAX;
    for w in bits.windows(2) {
        let d = w[0].iter().zip(&w[1]).filter(|(a, b)| a != b).count();
        min_dist = min_dist.min(d);
    }
    assert!(min_dist >= 30, "two consecutive ids differ in only {min_dist} of 128 bits");
    for pos in 0..128 {
        let ones = bits.iter().filter(|b| b[pos]).count();
        assert!((380..=620).contains(&ones), "bit {pos} set in {ones} of 1000 ids");
    }
    // Nothing one client receives is derived from another's: signaling tokens are as
    // random, and none of them shares a 12-character run with any credential or id.
    let mut tokens = HashSet::new();
    for _ in 0..20 {
        let mut ws = WsClient::connect(server.http_port);
        ws.send("connection", serde_json::json!({"appKey": "defaultApp"}));
        let m = ws.wait_for("getUserData", Duration::from_secs(5));
        let t = m["data"][0]["authToken"].as_str().unwrap().to_owned();
        assert_eq!(t.len(), 32, "128-bit session token: {t}");
        assert!(tokens.insert(t), "session token repeated");
    }
    let others: Vec<&String> = ufrags.iter().chain(&pwds).chain(&ids).collect();
    for t in &tokens {
        for w in t.as_bytes().windows(12) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(!others.iter().any(|o| o.contains(w)), "token shares {w:?} with another client's secret");
        }
    }
}

#[test]
fn attacker_cannot_end_a_victims_whip_session() {
    let server = Server::start(&["--workers", "2"]);
    let o = offer(true);
    let (status, _, victim_loc) = whip_post(server.http_port, "victim", &o);
    assert_eq!(status, 201);
    let victim_loc = victim_loc.unwrap();
    let (victim_id, _) = random_part(&victim_loc);
    // The attacker's own sessions and ids.
    let mut own = Vec::new();
    for i in 0..10 {
        let (status, _, loc) = whip_post(server.http_port, &format!("attacker{i}"), &o);
        assert_eq!(status, 201);
        own.push(random_part(&loc.unwrap()).0);
    }
    let mut tries = Vec::new();
    for id in &own {
        tries.push(id.clone());
        let (w, r) = id.split_once('-').unwrap();
        let n = u128::from_str_radix(r, 16).unwrap();
        for d in [1u128, 2, 3] {
            tries.push(format!("{w}-{:032x}", n.wrapping_add(d)));
            tries.push(format!("{w}-{:032x}", n.wrapping_sub(d)));
        }
    }
    // The old scheme's ids, and the victim's id with the other worker's index.
    for w in 0..2 {
        for c in 1..20 {
            tries.push(format!("{w}-{c}"));
        }
    }
    let (vw, vr) = victim_id.split_once('-').unwrap();
    tries.push(format!("{}-{vr}", 1 - vw.parse::<usize>().unwrap()));
    for id in &tries {
        let (status, _, _) = http_raw(server.http_port, "DELETE", &format!("/whip/victim/{id}"), "", "");
        assert_eq!(status, 404, "DELETE /whip/victim/{id} answered {status}");
    }
    // The right id on another name is not the session either.
    let (status, _, _) = http_raw(server.http_port, "DELETE", &format!("/whip/attacker0/{victim_id}"), "", "");
    assert_eq!(status, 404);
    assert!(!server.log().contains("\"victim\" ended"), "the victim's session ended:\n{}", server.log());
    // Its owner still can.
    let (status, _, _) = http_raw(server.http_port, "DELETE", &victim_loc, "", "");
    assert_eq!(status, 200);
    server.wait_log_line(Duration::from_secs(5), "the victim's session to end", |l| l.contains("\"victim\" ended"));
}

#[test]
fn delete_reaches_the_owning_worker_forty_of_forty() {
    let server = Server::start(&["--workers", "2", "--max-pending-webrtc-per-ip", "0"]);
    let o = offer(true);
    let mut locs = Vec::new();
    for i in 0..40 {
        let (status, body, loc) = whip_post(server.http_port, &format!("own{i}"), &o);
        assert_eq!(status, 201, "{body}");
        locs.push((format!("own{i}"), loc.unwrap()));
    }
    let owners: HashSet<String> = locs.iter().map(|(_, l)| random_part(l).0.split('-').next().unwrap().to_owned()).collect();
    assert_eq!(owners.len(), 2, "sessions on both workers: {owners:?}");
    for (name, loc) in &locs {
        let (status, head, body) = http_raw(server.http_port, "DELETE", loc, "", "");
        assert_eq!(status, 200, "DELETE {loc}: {head}\n{body}");
        assert_eq!(head_value(&head, "access-control-allow-origin").as_deref(), Some("*"));
        server.wait_log_line(Duration::from_secs(5), "the session to end", |l| l.contains(&format!("{name:?} ended")));
        // Gone: a second DELETE finds nothing.
        wait_for(Duration::from_secs(5), "the session to be forgotten", || {
            http_raw(server.http_port, "DELETE", loc, "", "").0 == 404
        });
    }
    assert!(server.log().contains("forwarded from worker"), "no DELETE landed on the other worker in 40 tries");
}
