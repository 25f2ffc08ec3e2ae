//! Sans-IO protocol cores. Nothing here owns a socket, a thread or a clock:
//! callers pass bytes and `now` in and drain outputs.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod codec;
pub mod depack;
pub mod dtls;
pub mod flv;
pub mod http;
pub mod packetize;
pub mod resp;
pub mod ice;
pub mod rtcp;
pub mod rtmp;
pub mod rtp;
pub mod rtp_recv;
pub mod sdp;
pub mod signaling;
pub mod srtp;
pub mod stun;
pub mod ws;
