//! What both ends of an RTMP connection do alike on the way out: chunk our own
//! control messages and commands, acknowledge a window's worth of input, and
//! keep the replies the peer has not read within a budget. The server session
//! (`session.rs`) and the client (`client.rs`) each hold one.

use super::amf::Value;
use super::amf0;
use super::chunk::ChunkEncoder;
use super::session::{CSID_CONTROL, MSG_ACK, MSG_COMMAND_AMF0};
use crate::buf::SendQueue;

#[derive(Debug, Default)]
pub(super) struct Wire {
    pub tx: ChunkEncoder,
    /// Reused for every message we build (becomes the queue's copy's source).
    pub scratch: Vec<u8>,
    /// Upper bound on the bytes of our replies and control messages still in the
    /// send queue: what we appended, capped by the queue's length each time we look
    /// (the queue is FIFO, so it cannot hold more of ours than its length; media
    /// appended behind them does not raise the bound).
    control_queued: usize,
    /// Bytes received since the start, modulo 2^32 (RTMP spec §5.4.3), and at the
    /// last Acknowledgement.
    received: u32,
    last_ack: u32,
    /// The peer's Window Acknowledgement Size (0: none asked).
    pub peer_window: u32,
}

impl Wire {
    /// Append our own bytes to `q`, counted against the output budget. The queue
    /// copies them (small ones inline), and `bytes` becomes the scratch buffer again.
    pub fn emit(&mut self, bytes: Vec<u8>, q: &mut SendQueue) {
        self.control_queued = self.control_queued.saturating_add(bytes.len());
        q.push_bytes(&bytes);
        self.scratch = bytes;
    }

    /// `Some((queued, budget))` when the replies the peer has not read exceed `budget`.
    pub fn over_budget(&mut self, q: &SendQueue, budget: usize) -> Option<(usize, usize)> {
        self.control_queued = self.control_queued.min(q.len());
        (self.control_queued > budget).then_some((self.control_queued, budget))
    }

    /// A protocol control or user control message on chunk stream 2.
    pub fn control(&mut self, type_id: u8, payload: &[u8], q: &mut SendQueue) {
        self.scratch.clear();
        self.tx.encode(CSID_CONTROL, 0, type_id, 0, payload, &mut self.scratch);
        let bytes = std::mem::take(&mut self.scratch);
        self.emit(bytes, q);
    }

    /// An AMF0 command on message stream `msid`, chunk stream `csid`.
    pub fn command(&mut self, msid: u32, csid: u32, values: &[Value], q: &mut SendQueue) {
        let mut body = Vec::new();
        amf0::encode_all(values, &mut body);
        self.scratch.clear();
        self.tx.encode(csid, 0, MSG_COMMAND_AMF0, msid, &body, &mut self.scratch);
        let bytes = std::mem::take(&mut self.scratch);
        self.emit(bytes, q);
    }

    /// `n` more bytes arrived: an Acknowledgement each time a window's worth has (§5.4.3).
    pub fn count_received(&mut self, n: u32, q: &mut SendQueue) {
        self.received = self.received.wrapping_add(n);
        if self.peer_window > 0 && self.received.wrapping_sub(self.last_ack) >= self.peer_window {
            self.last_ack = self.received;
            let received = self.received;
            self.control(MSG_ACK, &received.to_be_bytes(), q);
        }
    }
}
