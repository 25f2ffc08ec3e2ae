//! What both ends of an RTMP connection do alike on the way out: chunk our own
//! control messages and commands, acknowledge a window's worth of input, and
//! keep the replies the peer has not read within a budget. The server session
//! (`session.rs`) and the client (`client.rs`) each hold one.

use super::amf::Value;
use super::amf0;
use super::chunk::{ChunkDecoder, ChunkEncoder, ChunkError, RawMessage};
use super::session::{
    be_u32, CSID_CONTROL, MIN_PEER_WINDOW, MSG_ABORT, MSG_ACK, MSG_COMMAND_AMF0, MSG_SET_CHUNK_SIZE, MSG_USER_CONTROL,
    MSG_WINDOW_ACK_SIZE, UC_PING_REQUEST, UC_PING_RESPONSE,
};
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

/// A protocol control message both ends answer alike, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    /// Acted on (or nothing to do: an Acknowledgement, a user control event
    /// other than a ping request).
    Handled,
    /// A user control message too short to hold its event type (dropped, counted).
    Malformed,
    /// Not one of ours: the caller handles it.
    Other,
}

/// Why a control message is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ControlError {
    /// Shorter than its fixed length.
    BadLength,
    Chunk(ChunkError),
}

impl Wire {
    /// Set Chunk Size (the peer's, for `rx`), Abort, Acknowledgement, Window
    /// Acknowledgement Size (clamped to [`MIN_PEER_WINDOW`]) and user control
    /// (a ping request is answered).
    pub fn handle_control(&mut self, rx: &mut ChunkDecoder, m: &RawMessage, q: &mut SendQueue) -> Result<Control, ControlError> {
        match m.type_id {
            MSG_SET_CHUNK_SIZE => {
                let v = be_u32(&m.payload).ok_or(ControlError::BadLength)?;
                // Top bit must be zero (§5.4.1); the decoder also rejects 0.
                rx.set_chunk_size(v).map_err(ControlError::Chunk)?;
            }
            MSG_ABORT => rx.abort(be_u32(&m.payload).ok_or(ControlError::BadLength)?),
            MSG_ACK => {}
            MSG_WINDOW_ACK_SIZE => self.peer_window = be_u32(&m.payload).ok_or(ControlError::BadLength)?.max(MIN_PEER_WINDOW),
            MSG_USER_CONTROL => {
                let Some(kind) = m.payload.get(..2).and_then(|b| b.try_into().ok()).map(u16::from_be_bytes) else {
                    return Ok(Control::Malformed);
                };
                if kind == UC_PING_REQUEST {
                    let mut resp = UC_PING_RESPONSE.to_be_bytes().to_vec();
                    resp.extend_from_slice(m.payload.get(2..6).unwrap_or(&[0, 0, 0, 0]));
                    self.control(MSG_USER_CONTROL, &resp, q);
                }
            }
            _ => return Ok(Control::Other),
        }
        Ok(Control::Handled)
    }

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
