//! RTMP: handshake, chunk stream codec, AMF0/AMF3, the server session and the push client.

pub mod amf;
pub mod amf0;
pub mod amf3;
pub mod chunk;
pub mod client;
pub mod handshake;
pub mod session;
mod wire;
