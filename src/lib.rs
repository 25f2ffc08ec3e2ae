//! rtcbridge: WebRTC (and RTMP) ingest, RTMP fan-out, thread-per-core.
//!
//! Layers (DESIGN.md §3): `proto/` sans-IO protocol cores, `relay/` sans-IO
//! application state, `runtime/` the per-core mio shell (the only code that
//! touches sockets, threads and the clock), `buf/` shared frames and send queues.
#![deny(unsafe_code)]

pub mod buf;
pub mod config;
pub mod log;
pub mod proto;
pub mod relay;
pub mod runtime;
pub mod sys;
mod sync;
