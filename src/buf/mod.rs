//! Byte plumbing below every protocol: the per-connection send queue that turns
//! small owned headers and ranges of shared immutable bytes into iovecs for one
//! `writev`. It knows no protocol (the RTMP chunking of a frame belongs to
//! `proto::rtmp::chunk`, the frame itself to `relay::frame`).

mod sendq;

pub use sendq::{SendQueue, MAX_IOVECS};
