//! The relay: which core owns which stream, what a joining player is sent,
//! and how each player's queue sheds load. Sans-IO: the runtime calls in with
//! `now` and applies the results to sockets.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod auth;
pub mod core;
pub mod frame;
pub mod hub;
pub mod player;
pub mod registry;
pub mod rtc_audio;
pub mod rtc_transport;
pub mod rtc_viewer;
pub mod srsync;
pub mod stats;
pub mod webrtc;

pub use self::core::{Action, Backlog, CoreMsg, CoreRelay, Flush, PlayOutcome, PublishError, RelayConfig, RelayCounters, RelayTimer, Reservation, Sink, SinkId, SinkStatus};
pub use frame::{Audience, Frame};
pub use hub::{Snapshot, StreamHub};
pub use player::{Deliver, DropKind, PlayerPolicy, PlayerState};
pub use registry::{PlayLookup, Registry};
pub use stats::{StreamStats, WorkerStats};
