//! The signaling WebSocket's keepalive requires its answer: a peer that sends nothing
//! (not even the `pong` to our `ping`) is closed after 15 s, while one that answers stays.
mod common;

use common::signal::WsClient;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn silent_websocket_is_closed_and_an_answering_one_stays() {
    let server = Server::start(&[]);
    let t0 = Instant::now();
    // The silent one: upgrade, then never a byte.
    let mut silent = TcpStream::connect(("127.0.0.1", server.http_port)).expect("connect");
    write!(
        silent,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("upgrade");
    silent.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    // The answering one.
    let mut good = WsClient::connect(server.http_port);
    let mut closed_after = None;
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    while t0.elapsed() < Duration::from_secs(22) {
        if closed_after.is_none() {
            if let Ok(0) = silent.read(&mut buf) {
                closed_after = Some(t0.elapsed());
            }
        }
        if let Some(m) = good.recv(Duration::from_millis(200)) {
            if m["message"] == "ping" {
                pings += 1;
                good.send("pong", serde_json::Value::Null);
            }
        }
    }
    let after = closed_after.expect("the silent WebSocket is still open after 22 s");
    assert!(after >= Duration::from_secs(14) && after <= Duration::from_secs(21), "closed after {after:?} (limit 15 s)");
    assert!(pings >= 3, "the answering client saw {pings} pings");
    good.send("ping", serde_json::Value::Null);
    let pong = good.wait_for("pong", Duration::from_secs(3));
    assert_eq!(pong["message"], "pong");
    assert!(server.log().contains("sent nothing, not even a pong, for 15 s"), "{}", tail(&server.log(), 5));
}
