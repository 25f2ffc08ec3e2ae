//! Sans-IO protocol cores. Nothing here owns a socket, a thread or a clock:
//! callers pass bytes and `now` in and drain outputs.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod dtls;
pub mod http;
pub mod ice;
pub mod rtmp;
pub mod signaling;
pub mod stun;
pub mod ws;
