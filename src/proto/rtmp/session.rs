//! The RTMP server session: handshake, chunk stream, protocol control
//! messages, user control events and NetConnection/NetStream commands, as a
//! sans-IO state machine.
//!
//! Feed received bytes with [`RtmpSession::handle_input`]; it consumes what it
//! can, appends replies to the connection's [`SendQueue`] and queues
//! [`RtmpEvent`]s for the application (publish/play requests, media). The
//! application answers requests with `publish_ok`, `play_start`, ... which
//! also append to the queue, so bytes always leave in the order they were
//! produced.
//!
//! Implemented: digest and plain handshakes; chunk size, abort, ack window,
//! peer bandwidth; AMF0 (type 20/18) and AMF3 (type 17/15) commands and data;
//! connect (any extra arguments), createStream, publish, play, deleteStream,
//! closeStream, releaseStream, FCPublish, FCUnpublish, FCSubscribe,
//! getStreamLength, receiveAudio, receiveVideo, pause, @setDataFrame /
//! onMetaData; user control SetBufferLength, PingRequest/PingResponse.
//! Not implemented: aggregate messages (type 22, counted and dropped), shared
//! objects (type 16/19, dropped), RTMPE/RTMPT, the client role.
//!
//! Bounds against a hostile peer ([`SessionLimits`]):
//! - a message that is not media (command, data, control) may be at most
//!   `max_command` bytes, checked at its chunk header (the chunk decoder's
//!   `CommandTooLarge`); its AMF decodes into at most `amf::MAX_VALUES`
//!   values;
//! - replies and control messages (handshake, acks, pongs, command results,
//!   statuses) that the peer has not read yet may hold at most
//!   `output_budget` bytes of the send queue: before each chunk it decodes the
//!   session checks, and a peer that keeps asking without reading ends with
//!   [`RtmpError::OutputOverBudget`]. Media queued for a player is not
//!   counted (the relay's player queue policy bounds it);
//! - a Window Acknowledgement Size below [`MIN_PEER_WINDOW`] is raised to it,
//!   so acknowledgements cost at most 16 bytes per 4 KiB received;
//! - empty audio/video messages are dropped (counted), not turned into events.

use std::collections::VecDeque;

use super::amf::{AmfError, Value};
use super::chunk::{ChunkDecoder, ChunkError, RawMessage, DEFAULT_MAX_COMMAND_LEN};
use super::wire::{Control, ControlError, Wire};
use super::handshake::{HandshakeError, HandshakeServer};
use super::amf0;
use super::chunk::Prechunked;
use crate::buf::SendQueue;
use crate::proto::flv::MediaKind;

// Message type ids, RTMP spec 1.0 §5.4 and §7.1.
pub(super) const MSG_SET_CHUNK_SIZE: u8 = 1;
pub(super) const MSG_ABORT: u8 = 2;
pub(super) const MSG_ACK: u8 = 3;
pub(super) const MSG_USER_CONTROL: u8 = 4;
pub(super) const MSG_WINDOW_ACK_SIZE: u8 = 5;
pub(super) const MSG_SET_PEER_BANDWIDTH: u8 = 6;
pub(super) const MSG_AUDIO: u8 = 8;
pub(super) const MSG_VIDEO: u8 = 9;
pub(super) const MSG_DATA_AMF3: u8 = 15;
pub(super) const MSG_SHARED_OBJECT_AMF3: u8 = 16;
pub(super) const MSG_COMMAND_AMF3: u8 = 17;
pub(super) const MSG_DATA_AMF0: u8 = 18;
pub(super) const MSG_SHARED_OBJECT_AMF0: u8 = 19;
pub(super) const MSG_COMMAND_AMF0: u8 = 20;
pub(super) const MSG_AGGREGATE: u8 = 22;

// User control event types, RTMP spec 1.0 §7.1.7.
pub(super) const UC_STREAM_BEGIN: u16 = 0;
pub(super) const UC_STREAM_EOF: u16 = 1;
pub(super) const UC_SET_BUFFER_LENGTH: u16 = 3;
pub(super) const UC_PING_REQUEST: u16 = 6;
pub(super) const UC_PING_RESPONSE: u16 = 7;

/// Chunk stream ids we send on.
pub(super) const CSID_CONTROL: u32 = 2;
pub(super) const CSID_COMMAND: u32 = 3;
pub(super) const CSID_STATUS: u32 = 5;

/// Window acknowledgement size and peer bandwidth we announce (same value:
/// ffmpeg derives its ack interval from Set Peer Bandwidth).
pub const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// Message stream ids a client may create (createStream); bounded.
const MAX_STREAMS: u32 = 16;

/// Smallest Window Acknowledgement Size we honour (§5.4.4). A peer that asks
/// for less gets an Acknowledgement every `MIN_PEER_WINDOW` bytes instead.
/// Clamped rather than refused: the window only tells us how often to send
/// Acknowledgements, so acknowledging less often cannot corrupt the stream,
/// while a tiny window (1 byte: an ack per chunk) only serves to make us write
/// more than the peer sends. No real encoder asks for less than hundreds of
/// kilobytes (ffmpeg, librtmp, OBS: 2.5 MB; Flash 2.5–5 MB), so none sees a
/// difference, and a peer that did would at worst wait for an ack a little
/// longer instead of losing its connection.
pub const MIN_PEER_WINDOW: u32 = 4096;

/// Default budget for replies and control messages the peer has not read.
/// Four replies that echo a maximal command still fit; a real client never
/// has more than a few hundred bytes of them outstanding.
pub const DEFAULT_OUTPUT_BUDGET: usize = 4 * DEFAULT_MAX_COMMAND_LEN as usize;

/// The bounds a session enforces on its peer (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Longest command, data or control message (media: `max_message`).
    pub max_command: u32,
    /// Most bytes of unread replies and control messages.
    pub output_budget: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits { max_command: DEFAULT_MAX_COMMAND_LEN, output_budget: DEFAULT_OUTPUT_BUDGET }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtmpError {
    Handshake(HandshakeError),
    Chunk(ChunkError),
    /// A command or data message whose AMF does not decode.
    Amf(AmfError),
    /// A command message that is not [name, transaction id, ...].
    BadCommand,
    /// A protocol control message with the wrong length.
    BadControl,
    /// createStream called too often.
    TooManyStreams,
    /// The peer does not read: the replies and control messages it has not
    /// read yet exceed the budget (at most `queued` bytes of them are unsent).
    OutputOverBudget { queued: usize, budget: usize },
}

impl std::fmt::Display for RtmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RtmpError::Handshake(e) => write!(f, "handshake: {e}"),
            RtmpError::Chunk(e) => write!(f, "{e}"),
            RtmpError::Amf(e) => write!(f, "command: {e}"),
            RtmpError::BadCommand => f.write_str("command message without name and transaction id"),
            RtmpError::BadControl => f.write_str("protocol control message with a bad length"),
            RtmpError::TooManyStreams => f.write_str("more than 16 createStream calls"),
            RtmpError::OutputOverBudget { queued, budget } => write!(
                f,
                "peer does not read its replies: {queued} bytes of replies and control messages unsent (budget {budget})"
            ),
        }
    }
}

impl From<ChunkError> for RtmpError {
    fn from(e: ChunkError) -> Self {
        RtmpError::Chunk(e)
    }
}

/// What the application must act on.
#[derive(Debug, PartialEq)]
pub enum RtmpEvent {
    /// `connect` arrived: answer with `connect_accept` or `connect_reject`. Until then
    /// the session reads no further input (`handle_input` consumes nothing more), so
    /// nothing the client sends next is acted on before the verdict.
    ConnectRequested { app: String },
    /// Answer with `publish_ok`, `publish_bad_name` or `publish_denied`. `query` is what
    /// followed `?` in the stream name (`cam?token=...` → `token=...`).
    PublishRequested { msid: u32, name: String, query: String },
    /// Answer with `play_start`, `play_not_found` or `play_failed`.
    PlayRequested { msid: u32, name: String, query: String },
    /// Audio, video or data (metadata re-encoded as `onMetaData`) from a publisher.
    Media { msid: u32, kind: MediaKind, ts: u32, payload: Vec<u8> },
    /// deleteStream / closeStream / FCUnpublish on a message stream.
    StreamClosed { msid: u32 },
    Pause { msid: u32, paused: bool },
    ReceiveAudio { msid: u32, on: bool },
    ReceiveVideo { msid: u32, on: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Handshake,
    /// `connect` (transaction `tid`) awaits the application's verdict.
    AwaitingConnect { tid: f64 },
    Ready,
    /// `connect` was refused: input is discarded until the shell closes the connection.
    Rejected,
}

/// Counters a session keeps for the shell's metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    pub dropped_messages: u64,
}

pub struct RtmpSession {
    phase: Phase,
    handshake: HandshakeServer,
    rx: ChunkDecoder,
    wire: Wire,
    out_chunk_size: usize,
    events: VecDeque<RtmpEvent>,
    next_msid: u32,
    object_encoding: f64,
    /// Enhanced RTMP `fourCcList` from connect.
    four_cc: Vec<String>,
    /// A token given with `connect`: `?token=` in the tcUrl, or a `token` field of the
    /// command object or of an object argument (Flash's `nc.connect(url, {login, token})`).
    connect_token: Option<String>,
    /// The connect command object and its extra arguments as sent (Flash's
    /// `nc.connect(url, {login, appKey})`), for an access hook to see.
    connect_obj: Value,
    connect_args: Vec<Value>,
    pub stats: SessionStats,
    limits: SessionLimits,
}

impl RtmpSession {
    pub fn new(seed: u64, epoch_ms: u32, max_message: u32, out_chunk_size: usize) -> Self {
        RtmpSession {
            phase: Phase::Handshake,
            handshake: HandshakeServer::new(seed, epoch_ms),
            rx: ChunkDecoder::new(max_message),
            wire: Wire::default(),
            out_chunk_size,
            events: VecDeque::new(),
            next_msid: 1,
            object_encoding: 0.0,
            four_cc: Vec::new(),
            connect_token: None,
            connect_obj: Value::Null,
            connect_args: Vec::new(),
            stats: SessionStats::default(),
            limits: SessionLimits::default(),
        }
    }

    /// Replace the default bounds (see [`SessionLimits`]).
    #[must_use]
    pub fn with_limits(mut self, limits: SessionLimits) -> Self {
        self.limits = limits;
        self.rx.set_max_command_len(limits.max_command);
        self
    }

    /// Append our own bytes (a reply or control message) to `q`, counted against
    /// the output budget.
    fn emit(&mut self, bytes: Vec<u8>, q: &mut SendQueue) {
        self.wire.emit(bytes, q);
    }

    /// Before decoding more of the peer's input (which may append a reply):
    /// `Err` if the replies and control messages it has not read are over budget.
    fn check_output(&mut self, q: &SendQueue) -> Result<(), RtmpError> {
        match self.wire.over_budget(q, self.limits.output_budget) {
            Some((queued, budget)) => Err(RtmpError::OutputOverBudget { queued, budget }),
            None => Ok(()),
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.phase == Phase::Handshake
    }

    /// Codecs the client announced in `connect.fourCcList` (Enhanced RTMP).
    pub fn four_cc_list(&self) -> &[String] {
        &self.four_cc
    }

    /// The token given with `connect`, if any.
    pub fn connect_token(&self) -> Option<&str> {
        self.connect_token.as_deref()
    }

    /// The connect command object and its extra arguments, as the client sent them.
    pub fn connect_object(&self) -> (&Value, &[Value]) {
        (&self.connect_obj, &self.connect_args)
    }

    /// Whether `connect` waits for `connect_accept` / `connect_reject`.
    pub fn is_awaiting_connect(&self) -> bool {
        matches!(self.phase, Phase::AwaitingConnect { .. })
    }

    pub fn object_encoding(&self) -> f64 {
        self.object_encoding
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<RtmpEvent> {
        self.events.pop_front()
    }

    /// Consume complete handshake blocks and chunks from the front of `input`;
    /// returns the bytes consumed. Replies go to `q`. `Err` is fatal.
    pub fn handle_input(&mut self, input: &[u8], q: &mut SendQueue) -> Result<usize, RtmpError> {
        let mut used = 0;
        self.check_output(q)?;
        if self.phase == Phase::Handshake {
            let mut out = Vec::new();
            let n = self.handshake.handle_input(input, &mut out).map_err(RtmpError::Handshake)?;
            self.emit(out, q);
            used += n;
            if !self.handshake.is_done() {
                return Ok(used);
            }
            self.phase = Phase::Ready;
        }
        loop {
            match self.phase {
                Phase::AwaitingConnect { .. } => break,
                Phase::Rejected => return Ok(input.len()),
                Phase::Handshake | Phase::Ready => {}
            }
            let rest = input.get(used..).unwrap_or(&[]);
            if rest.is_empty() {
                break;
            }
            self.check_output(q)?;
            let (n, msg) = self.rx.decode(rest)?;
            if n == 0 {
                break;
            }
            used += n;
            self.count_received(n as u32, q);
            if let Some(m) = msg {
                self.handle_message(m, q)?;
            }
        }
        Ok(used)
    }

    /// Send an Acknowledgement each time a window's worth has arrived (§5.4.3).
    fn count_received(&mut self, n: u32, q: &mut SendQueue) {
        self.wire.count_received(n, q);
    }

    fn handle_message(&mut self, m: RawMessage, q: &mut SendQueue) -> Result<(), RtmpError> {
        match self.wire.handle_control(&mut self.rx, &m, q) {
            Ok(Control::Handled) => return Ok(()),
            Ok(Control::Malformed) => {
                self.stats.dropped_messages += 1;
                return Ok(());
            }
            Ok(Control::Other) => {}
            Err(ControlError::BadLength) => return Err(RtmpError::BadControl),
            Err(ControlError::Chunk(e)) => return Err(RtmpError::Chunk(e)),
        }
        match m.type_id {
            MSG_SET_PEER_BANDWIDTH => {}
            MSG_AUDIO | MSG_VIDEO if m.payload.is_empty() => self.stats.dropped_messages += 1,
            MSG_AUDIO | MSG_VIDEO => {
                let kind = if m.type_id == MSG_AUDIO { MediaKind::Audio } else { MediaKind::Video };
                self.events.push_back(RtmpEvent::Media { msid: m.stream_id, kind, ts: m.timestamp, payload: m.payload });
            }
            MSG_DATA_AMF0 | MSG_DATA_AMF3 => self.handle_data(m)?,
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => {
                let body = if m.type_id == MSG_COMMAND_AMF3 {
                    // AMF3 command: one format byte (0) then AMF0 values that may switch to AMF3.
                    m.payload.get(1..).unwrap_or(&[])
                } else {
                    &m.payload[..]
                };
                let values = amf0::decode_all(body).map_err(RtmpError::Amf)?;
                self.handle_command(m.stream_id, values, q)?;
            }
            MSG_SHARED_OBJECT_AMF0 | MSG_SHARED_OBJECT_AMF3 | MSG_AGGREGATE => self.stats.dropped_messages += 1,
            _ => self.stats.dropped_messages += 1,
        }
        Ok(())
    }

    fn handle_data(&mut self, m: RawMessage) -> Result<(), RtmpError> {
        let body = if m.type_id == MSG_DATA_AMF3 { m.payload.get(1..).unwrap_or(&[]) } else { &m.payload[..] };
        let values = match amf0::decode_all(body) {
            Ok(v) => v,
            Err(_) => {
                // Unreadable metadata is dropped, not fatal: the media still plays.
                self.stats.dropped_messages += 1;
                return Ok(());
            }
        };
        let mut it = values.into_iter();
        let first = it.next();
        let (name, rest): (Option<String>, Vec<Value>) = match first.as_ref().and_then(Value::as_str) {
            Some("@setDataFrame") => {
                let name = it.next().and_then(|v| v.as_str().map(str::to_owned));
                (name, it.collect())
            }
            Some(n) => (Some(n.to_owned()), it.collect()),
            None => (None, Vec::new()),
        };
        if name.as_deref() == Some("onMetaData") {
            let mut out = Vec::new();
            amf0::encode(&Value::String("onMetaData".into()), &mut out);
            amf0::encode_all(&rest, &mut out);
            self.events.push_back(RtmpEvent::Media { msid: m.stream_id, kind: MediaKind::Data, ts: m.timestamp, payload: out });
        } else {
            self.stats.dropped_messages += 1;
        }
        Ok(())
    }

    fn handle_command(&mut self, msid: u32, values: Vec<Value>, q: &mut SendQueue) -> Result<(), RtmpError> {
        let mut it = values.into_iter();
        let name = match it.next() {
            Some(Value::String(s)) => s,
            _ => return Err(RtmpError::BadCommand),
        };
        let tid = it.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let cmd_obj = it.next().unwrap_or(Value::Null);
        let args: Vec<Value> = it.collect();
        let arg_str = |i: usize| args.get(i).and_then(Value::as_str).map(stream_key);
        let arg_query = |i: usize| {
            args.get(i).and_then(Value::as_str).and_then(|n| n.split_once('?')).map(|(_, q)| q.to_owned()).unwrap_or_default()
        };
        let arg_bool = |i: usize| matches!(args.get(i), Some(Value::Boolean(true)));
        match name.as_str() {
            "connect" => {
                self.object_encoding = cmd_obj.get("objectEncoding").and_then(Value::as_f64).unwrap_or(0.0);
                self.four_cc = match cmd_obj.get("fourCcList") {
                    Some(Value::StrictArray(v)) => v.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                    _ => Vec::new(),
                };
                let app = cmd_obj.get("app").and_then(Value::as_str).unwrap_or("").to_owned();
                let tc_url_token = cmd_obj
                    .get("tcUrl")
                    .and_then(Value::as_str)
                    .and_then(|u| u.split_once('?'))
                    .and_then(|(_, q)| query_token(q));
                let obj_token = std::iter::once(&cmd_obj)
                    .chain(args.iter())
                    .find_map(|o| o.get("token").and_then(Value::as_str).map(str::to_owned));
                self.connect_token = tc_url_token.or(obj_token).filter(|t| !t.is_empty());
                self.connect_obj = cmd_obj;
                self.connect_args = args;
                self.phase = Phase::AwaitingConnect { tid };
                self.events.push_back(RtmpEvent::ConnectRequested { app });
            }
            "createStream" => {
                if self.next_msid > MAX_STREAMS {
                    return Err(RtmpError::TooManyStreams);
                }
                let id = self.next_msid;
                self.next_msid += 1;
                self.result(tid, Value::Number(f64::from(id)), q);
            }
            "publish" => match arg_str(0) {
                Some(n) if !n.is_empty() => self.events.push_back(RtmpEvent::PublishRequested { msid, name: n, query: arg_query(0) }),
                _ => self.status(msid, "error", "NetStream.Publish.BadName", "Empty stream name.", q),
            },
            "play" => match arg_str(0) {
                Some(n) if !n.is_empty() => self.events.push_back(RtmpEvent::PlayRequested { msid, name: n, query: arg_query(0) }),
                _ => self.status(msid, "error", "NetStream.Play.StreamNotFound", "Empty stream name.", q),
            },
            "deleteStream" => {
                let id = args.first().and_then(Value::as_f64).map(|v| v as u32).unwrap_or(msid);
                self.events.push_back(RtmpEvent::StreamClosed { msid: id });
            }
            "closeStream" => self.events.push_back(RtmpEvent::StreamClosed { msid }),
            "FCUnpublish" => {
                let n = arg_str(0).unwrap_or_default();
                self.command(0, CSID_COMMAND, &[
                    Value::String("onFCUnpublish".into()),
                    Value::Number(0.0),
                    Value::Null,
                    info_obj("status", "NetStream.Unpublish.Success", &n),
                ], q);
            }
            "FCPublish" => {
                let n = arg_str(0).unwrap_or_default();
                self.command(0, CSID_COMMAND, &[
                    Value::String("onFCPublish".into()),
                    Value::Number(0.0),
                    Value::Null,
                    info_obj("status", "NetStream.Publish.Start", &n),
                ], q);
            }
            "FCSubscribe" => {
                let n = arg_str(0).unwrap_or_default();
                self.command(0, CSID_COMMAND, &[
                    Value::String("onFCSubscribe".into()),
                    Value::Number(0.0),
                    Value::Null,
                    info_obj("status", "NetStream.Play.Start", &n),
                ], q);
            }
            "releaseStream" | "_checkbw" => {
                if tid > 0.0 {
                    self.result(tid, Value::Undefined, q);
                }
            }
            "getStreamLength" => self.result(tid, Value::Number(0.0), q),
            "receiveAudio" => self.events.push_back(RtmpEvent::ReceiveAudio { msid, on: arg_bool(0) }),
            "receiveVideo" => self.events.push_back(RtmpEvent::ReceiveVideo { msid, on: arg_bool(0) }),
            "pause" => {
                let paused = arg_bool(0);
                let code = if paused { "NetStream.Pause.Notify" } else { "NetStream.Unpause.Notify" };
                self.status(msid, "status", code, if paused { "Paused." } else { "Unpaused." }, q);
                self.events.push_back(RtmpEvent::Pause { msid, paused });
            }
            "ping" => self.command(0, CSID_COMMAND, &[Value::String("pong".into()), Value::Number(0.0), Value::Null], q),
            // Replies to our own calls, keep-alives and anything unknown: no answer needed.
            _ => {
                if tid > 0.0 && !name.starts_with('_') {
                    crate::debug!("rtmp: unanswered command {}", crate::log::peer_str(&name));
                }
            }
        }
        Ok(())
    }

    /// Accept the pending `connect`: window size, peer bandwidth, chunk size, then
    /// `_result` with NetConnection.Connect.Success. Input is read again from here on.
    pub fn connect_accept(&mut self, q: &mut SendQueue) {
        let Phase::AwaitingConnect { tid } = self.phase else { return };
        self.phase = Phase::Ready;
        self.control(MSG_WINDOW_ACK_SIZE, &WINDOW_ACK_SIZE.to_be_bytes(), q);
        let mut bw = WINDOW_ACK_SIZE.to_be_bytes().to_vec();
        bw.push(2); // limit type: dynamic
        self.control(MSG_SET_PEER_BANDWIDTH, &bw, q);
        self.control(MSG_SET_CHUNK_SIZE, &(self.out_chunk_size as u32).to_be_bytes(), q);
        self.wire.tx.set_chunk_size(self.out_chunk_size);
        let props = Value::Object(vec![
            ("fmsVer".into(), Value::String("FMS/3,5,7,7009".into())),
            ("capabilities".into(), Value::Number(31.0)),
            ("mode".into(), Value::Number(1.0)),
        ]);
        let info = Value::Object(vec![
            ("level".into(), Value::String("status".into())),
            ("code".into(), Value::String("NetConnection.Connect.Success".into())),
            ("description".into(), Value::String("Connection succeeded.".into())),
            ("objectEncoding".into(), Value::Number(self.object_encoding)),
        ]);
        self.command(0, CSID_COMMAND, &[Value::String("_result".into()), Value::Number(tid), props, info], q);
    }

    /// Refuse the pending `connect`: `_error` with NetConnection.Connect.Rejected and
    /// `description` (ffmpeg prints it as "Server error: ..."). Later input is discarded;
    /// the shell closes the connection once this is written.
    pub fn connect_reject(&mut self, description: &str, q: &mut SendQueue) {
        let Phase::AwaitingConnect { tid } = self.phase else { return };
        self.phase = Phase::Rejected;
        let info = Value::Object(vec![
            ("level".into(), Value::String("error".into())),
            ("code".into(), Value::String("NetConnection.Connect.Rejected".into())),
            ("description".into(), Value::String(description.into())),
        ]);
        self.command(0, CSID_COMMAND, &[Value::String("_error".into()), Value::Number(tid), Value::Null, info], q);
    }

    /// Refuse a publish for access control: NetStream.Publish.BadName (what encoders
    /// understand as "not this name") with the reason.
    pub fn publish_denied(&mut self, msid: u32, description: &str, q: &mut SendQueue) {
        self.status(msid, "error", "NetStream.Publish.BadName", description, q);
    }

    /// Refuse a play for access control: NetStream.Play.Failed with the reason.
    pub fn play_failed(&mut self, msid: u32, description: &str, q: &mut SendQueue) {
        self.status(msid, "error", "NetStream.Play.Failed", description, q);
    }

    /// Accept a publish: StreamBegin, then NetStream.Publish.Start.
    pub fn publish_ok(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.user_control(UC_STREAM_BEGIN, msid, q);
        self.status(msid, "status", "NetStream.Publish.Start", &format!("{name} is now published."), q);
    }

    pub fn publish_bad_name(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.status(msid, "error", "NetStream.Publish.BadName", &format!("{name} is already being published."), q);
    }

    pub fn unpublish_ok(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.status(msid, "status", "NetStream.Unpublish.Success", &format!("{name} is now unpublished."), q);
    }

    /// Start a player: StreamBegin, Play.Reset, Play.Start, |RtmpSampleAccess (PROTOCOL-NOTES: no Data.Start).
    pub fn play_start(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.user_control(UC_STREAM_BEGIN, msid, q);
        self.status(msid, "status", "NetStream.Play.Reset", &format!("Playing and resetting {name}."), q);
        self.status(msid, "status", "NetStream.Play.Start", &format!("Started playing {name}."), q);
        let mut body = Vec::new();
        amf0::encode_all(&[Value::String("|RtmpSampleAccess".into()), Value::Boolean(true), Value::Boolean(true)], &mut body);
        self.wire.scratch.clear();
        self.wire.tx.encode(CSID_STATUS, 0, MSG_DATA_AMF0, msid, &body, &mut self.wire.scratch);
        let bytes = std::mem::take(&mut self.wire.scratch);
        self.emit(bytes, q);
    }

    pub fn play_not_found(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.status(msid, "error", "NetStream.Play.StreamNotFound", &format!("No such stream: {name}."), q);
    }

    pub fn publish_notify(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.status(msid, "status", "NetStream.Play.PublishNotify", &format!("{name} is now published."), q);
    }

    /// The player stopped the stream itself (closeStream / deleteStream): Flash's
    /// NetStream.Play.Stop, which the Flashphoner Flash client waits for.
    pub fn play_stop(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.status(msid, "status", "NetStream.Play.Stop", &format!("Stopped playing {name}."), q);
    }

    pub fn unpublish_notify(&mut self, msid: u32, name: &str, q: &mut SendQueue) {
        self.status(msid, "status", "NetStream.Play.UnpublishNotify", &format!("{name} is now unpublished."), q);
    }

    /// The chunk size this session writes with (what shared bodies must be chunked at).
    pub fn out_chunk_size(&self) -> usize {
        self.out_chunk_size
    }

    /// Queue one shared media message for a player at player timestamp `ts`.
    /// Only the first chunk header is per player; the chunked body is shared.
    pub fn queue_media(&mut self, msid: u32, ts: u32, kind: MediaKind, body: &Prechunked, q: &mut SendQueue) {
        super::chunk::queue_prechunked(&mut self.wire.tx, &mut self.wire.scratch, kind, msid, ts, body, q);
    }

    fn control(&mut self, type_id: u8, payload: &[u8], q: &mut SendQueue) {
        self.wire.control(type_id, payload, q);
    }

    fn user_control(&mut self, event: u16, msid: u32, q: &mut SendQueue) {
        let mut p = event.to_be_bytes().to_vec();
        p.extend_from_slice(&msid.to_be_bytes());
        self.control(MSG_USER_CONTROL, &p, q);
    }

    /// Send a stream-EOF user control (player's stream ended).
    pub fn stream_eof(&mut self, msid: u32, q: &mut SendQueue) {
        self.user_control(UC_STREAM_EOF, msid, q);
    }

    fn command(&mut self, msid: u32, csid: u32, values: &[Value], q: &mut SendQueue) {
        self.wire.command(msid, csid, values, q);
    }

    fn result(&mut self, tid: f64, value: Value, q: &mut SendQueue) {
        self.command(0, CSID_COMMAND, &[Value::String("_result".into()), Value::Number(tid), Value::Null, value], q);
    }

    fn status(&mut self, msid: u32, level: &str, code: &str, desc: &str, q: &mut SendQueue) {
        self.command(msid, CSID_STATUS, &[
            Value::String("onStatus".into()),
            Value::Number(0.0),
            Value::Null,
            info_obj(level, code, desc),
        ], q);
    }
}

fn info_obj(level: &str, code: &str, desc: &str) -> Value {
    Value::Object(vec![
        ("level".into(), Value::String(level.into())),
        ("code".into(), Value::String(code.into())),
        ("description".into(), Value::String(desc.into())),
    ])
}

/// The key of a stream name: drop a query string (`name?token=...`) and any
/// FMLE-style `mp4:` prefix is kept as part of the name.
fn stream_key(name: &str) -> String {
    name.split('?').next().unwrap_or("").to_owned()
}

/// `token=VALUE` in a query string.
fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_owned)
}

pub(super) fn be_u32(p: &[u8]) -> Option<u32> {
    p.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::rtmp::chunk::ChunkEncoder;
    use crate::proto::rtmp::handshake::HandshakeClient;

    /// Drive a session with a client: handshake, then chunk-encoded messages.
    struct Client {
        tx: ChunkEncoder,
        rx: ChunkDecoder,
    }

    impl Client {
        fn connect(s: &mut RtmpSession, q: &mut SendQueue) -> Client {
            let mut out = Vec::new();
            let mut hc = HandshakeClient::new(1, 0, &mut out);
            let n = s.handle_input(&out, q).unwrap();
            assert_eq!(n, out.len());
            let s_bytes = drain(q);
            let mut c2 = Vec::new();
            let used = hc.handle_input(&s_bytes, &mut c2).unwrap();
            assert_eq!(used, s_bytes.len());
            assert!(hc.is_done());
            assert_eq!(s.handle_input(&c2, q).unwrap(), c2.len());
            assert!(!s.is_handshaking());
            Client { tx: ChunkEncoder::new(), rx: ChunkDecoder::new(1 << 24) }
        }
        fn send(&mut self, s: &mut RtmpSession, q: &mut SendQueue, type_id: u8, msid: u32, body: &[u8]) {
            let mut b = Vec::new();
            self.tx.encode(3, 0, type_id, msid, body, &mut b);
            assert_eq!(s.handle_input(&b, q).unwrap(), b.len());
        }
        fn cmd(&mut self, s: &mut RtmpSession, q: &mut SendQueue, msid: u32, vals: &[Value]) {
            let mut body = Vec::new();
            amf0::encode_all(vals, &mut body);
            self.send(s, q, MSG_COMMAND_AMF0, msid, &body);
        }
        /// Decode everything the server queued; returns messages.
        fn recv(&mut self, q: &mut SendQueue) -> Vec<RawMessage> {
            let bytes = drain(q);
            let mut msgs = Vec::new();
            let mut off = 0;
            while off < bytes.len() {
                let (n, m) = self.rx.decode(&bytes[off..]).unwrap();
                assert!(n > 0);
                off += n;
                if let Some(m) = m {
                    if m.type_id == MSG_SET_CHUNK_SIZE {
                        self.rx.set_chunk_size(be_u32(&m.payload).unwrap()).unwrap();
                    }
                    msgs.push(m);
                }
            }
            msgs
        }
    }

    fn drain(q: &mut SendQueue) -> Vec<u8> {
        let mut v = Vec::new();
        q.write_to(&mut v).unwrap();
        v
    }

    fn codes(msgs: &[RawMessage]) -> Vec<String> {
        msgs.iter()
            .filter(|m| m.type_id == MSG_COMMAND_AMF0)
            .filter_map(|m| {
                let v = amf0::decode_all(&m.payload).ok()?;
                let name = v.first()?.as_str()?.to_owned();
                match v.get(3).and_then(|i| i.get("code")).and_then(Value::as_str) {
                    Some(c) => Some(c.to_owned()),
                    None => Some(name),
                }
            })
            .collect()
    }

    fn connect_obj(extra: Vec<(String, Value)>) -> Value {
        let mut props = vec![("app".to_string(), Value::String("live".into()))];
        props.extend(extra);
        Value::Object(props)
    }

    #[test]
    fn connect_with_flash_extra_args_succeeds() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        c.cmd(&mut s, &mut q, 0, &[
            Value::String("connect".into()),
            Value::Number(1.0),
            connect_obj(vec![]),
            Value::Object(vec![
                ("login".into(), Value::String("u".into())),
                ("appKey".into(), Value::String("flashStreamingApp".into())),
                ("token".into(), Value::String("t0k".into())),
            ]),
        ]);
        // Nothing is answered before the application decides.
        assert!(c.recv(&mut q).is_empty());
        assert!(s.is_awaiting_connect());
        assert_eq!(s.connect_token(), Some("t0k"));
        assert_eq!(s.poll_event(), Some(RtmpEvent::ConnectRequested { app: "live".into() }));
        s.connect_accept(&mut q);
        let msgs = c.recv(&mut q);
        let types: Vec<u8> = msgs.iter().map(|m| m.type_id).collect();
        assert_eq!(types, vec![MSG_WINDOW_ACK_SIZE, MSG_SET_PEER_BANDWIDTH, MSG_SET_CHUNK_SIZE, MSG_COMMAND_AMF0]);
        assert_eq!(codes(&msgs), vec!["NetConnection.Connect.Success"]);
    }

    #[test]
    fn connect_waits_for_the_verdict_and_can_be_rejected() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let _ = Client::connect(&mut s, &mut q);
        // connect and createStream in one read: only connect is consumed until the verdict.
        let mut c = Client { tx: ChunkEncoder::new(), rx: ChunkDecoder::new(1 << 24) };
        let mut b = Vec::new();
        let mut body = Vec::new();
        amf0::encode_all(&[Value::String("connect".into()), Value::Number(1.0), connect_obj(vec![("tcUrl".into(), Value::String("rtmp://h/live?token=abc".into()))])], &mut body);
        c.tx.encode(3, 0, MSG_COMMAND_AMF0, 0, &body, &mut b);
        let first = b.len();
        body.clear();
        amf0::encode_all(&[Value::String("createStream".into()), Value::Number(2.0), Value::Null], &mut body);
        c.tx.encode(3, 0, MSG_COMMAND_AMF0, 0, &body, &mut b);
        assert_eq!(s.handle_input(&b, &mut q).unwrap(), first);
        assert_eq!(s.connect_token(), Some("abc"));
        assert_eq!(s.poll_event(), Some(RtmpEvent::ConnectRequested { app: "live".into() }));
        s.connect_reject("Restricted access: bad token signature", &mut q);
        let msgs = c.recv(&mut q);
        assert_eq!(codes(&msgs), vec!["NetConnection.Connect.Rejected"]);
        let v = amf0::decode_all(&msgs[0].payload).unwrap();
        assert_eq!(v[0], Value::String("_error".into()));
        // The rest is discarded, never acted on.
        assert_eq!(s.handle_input(&b[first..], &mut q).unwrap(), b.len() - first);
        assert!(c.recv(&mut q).is_empty());
        assert_eq!(s.poll_event(), None);
    }

    #[test]
    fn amf3_connect_echoes_object_encoding_and_type17_commands_work() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        c.cmd(&mut s, &mut q, 0, &[
            Value::String("connect".into()),
            Value::Number(1.0),
            connect_obj(vec![("objectEncoding".into(), Value::Number(3.0))]),
        ]);
        s.connect_accept(&mut q);
        let msgs = c.recv(&mut q);
        let v = amf0::decode_all(&msgs.last().unwrap().payload).unwrap();
        assert_eq!(v[3].get("objectEncoding"), Some(&Value::Number(3.0)));
        // createStream as an AMF3 command message: 0x00 then AMF0 values.
        let mut body = vec![0u8];
        amf0::encode_all(&[Value::String("createStream".into()), Value::Number(2.0), Value::Null], &mut body);
        c.send(&mut s, &mut q, MSG_COMMAND_AMF3, 0, &body);
        let msgs = c.recv(&mut q);
        let v = amf0::decode_all(&msgs[0].payload).unwrap();
        assert_eq!(v[0], Value::String("_result".into()));
        assert_eq!(v[1], Value::Number(2.0));
        assert_eq!(v[3], Value::Number(1.0));
    }

    #[test]
    fn play_request_then_start_sequence() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        c.cmd(&mut s, &mut q, 0, &[Value::String("connect".into()), Value::Number(1.0), connect_obj(vec![])]);
        s.connect_accept(&mut q);
        c.cmd(&mut s, &mut q, 0, &[Value::String("createStream".into()), Value::Number(2.0), Value::Null]);
        c.cmd(&mut s, &mut q, 1, &[Value::String("play".into()), Value::Number(0.0), Value::Null, Value::String("cam?tok=1".into())]);
        let _ = c.recv(&mut q);
        assert_eq!(s.poll_event(), Some(RtmpEvent::ConnectRequested { app: "live".into() }));
        assert_eq!(s.poll_event(), Some(RtmpEvent::PlayRequested { msid: 1, name: "cam".into(), query: "tok=1".into() }));
        s.play_start(1, "cam", &mut q);
        let msgs = c.recv(&mut q);
        assert_eq!(codes(&msgs), vec!["NetStream.Play.Reset", "NetStream.Play.Start"]);
        assert_eq!(msgs.last().unwrap().type_id, MSG_DATA_AMF0);
        // Media: header per player + shared body decodes to the payload.
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let body: std::sync::Arc<[u8]> = payload.clone().into();
        let pre = Prechunked::new(&body, 4096, MediaKind::Video.csid());
        s.queue_media(1, 40, MediaKind::Video, &pre, &mut q);
        s.queue_media(1, 0x0100_0000, MediaKind::Video, &pre, &mut q); // extended timestamp path
        let msgs = c.recv(&mut q);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].payload, payload);
        assert_eq!(msgs[0].timestamp, 40);
        assert_eq!(msgs[1].payload, payload);
        assert_eq!(msgs[1].timestamp, 0x0100_0000);
    }

    #[test]
    fn chunk_size_zero_is_fatal_and_named() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let _c = Client::connect(&mut s, &mut q);
        let mut b = Vec::new();
        ChunkEncoder::new().encode(2, 0, MSG_SET_CHUNK_SIZE, 0, &0u32.to_be_bytes(), &mut b);
        let e = s.handle_input(&b, &mut q).unwrap_err();
        assert_eq!(e.to_string(), "invalid chunk size 0");
    }

    #[test]
    fn set_data_frame_becomes_on_metadata() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        let mut body = Vec::new();
        amf0::encode_all(&[
            Value::String("@setDataFrame".into()),
            Value::String("onMetaData".into()),
            Value::EcmaArray(vec![("width".into(), Value::Number(640.0))]),
        ], &mut body);
        c.send(&mut s, &mut q, MSG_DATA_AMF0, 1, &body);
        match s.poll_event() {
            Some(RtmpEvent::Media { kind: MediaKind::Data, payload, .. }) => {
                let v = amf0::decode_all(&payload).unwrap();
                assert_eq!(v[0], Value::String("onMetaData".into()));
                assert_eq!(v[1].get("width"), Some(&Value::Number(640.0)));
            }
            other => panic!("expected metadata, got {other:?}"),
        }
    }

    fn ping_request(t: u32) -> Vec<u8> {
        let mut p = UC_PING_REQUEST.to_be_bytes().to_vec();
        p.extend_from_slice(&t.to_be_bytes());
        p
    }

    /// Chunk-encode one message on csid 2 with a fresh encoder (fmt 0).
    fn chunked(type_id: u8, body: &[u8], chunk_size: usize) -> Vec<u8> {
        let mut enc = ChunkEncoder::new();
        enc.set_chunk_size(chunk_size);
        let mut b = Vec::new();
        enc.encode(2, 0, type_id, 0, body, &mut b);
        b
    }

    #[test]
    fn ping_flood_without_reading_ends_over_budget() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        let _ = drain(&mut q);
        // A client that reads its pongs can ping forever.
        for t in 0..10_000 {
            c.send(&mut s, &mut q, MSG_USER_CONTROL, 0, &ping_request(t));
            if t % 100 == 99 {
                let msgs = c.recv(&mut q);
                assert_eq!(msgs.len(), 100);
                assert!(msgs.iter().all(|m| m.type_id == MSG_USER_CONTROL && m.payload[..2] == [0, 7]));
            }
        }
        // One that never reads is stopped once its unread replies pass the budget.
        let mut err = None;
        for t in 0..1_000_000 {
            let mut b = Vec::new();
            c.tx.encode(3, 0, MSG_USER_CONTROL, 0, &ping_request(t), &mut b);
            if let Err(e) = s.handle_input(&b, &mut q) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("the flood is refused");
        assert!(matches!(e, RtmpError::OutputOverBudget { budget: DEFAULT_OUTPUT_BUDGET, .. }), "{e:?}");
        assert!(q.len() <= DEFAULT_OUTPUT_BUDGET + 64, "{}", q.len());
        assert!(e.to_string().starts_with("peer does not read its replies"), "{e}");
    }

    #[test]
    fn amf_ping_commands_count_against_the_budget() {
        let limits = SessionLimits { output_budget: 10_000, ..SessionLimits::default() };
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096).with_limits(limits);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        let _ = drain(&mut q);
        let mut body = Vec::new();
        amf0::encode_all(&[Value::String("ping".into()), Value::Number(0.0), Value::Null], &mut body);
        let mut b = Vec::new();
        c.tx.encode(3, 0, MSG_COMMAND_AMF0, 0, &body, &mut b);
        let mut n = 0;
        let e = loop {
            match s.handle_input(&b, &mut q) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 10_000);
        };
        assert_eq!(e, RtmpError::OutputOverBudget { queued: q.len(), budget: 10_000 });
        assert!(n > 100, "{n} pongs before the budget ran out");
    }

    #[test]
    fn media_queued_for_a_player_is_not_counted() {
        let limits = SessionLimits { output_budget: 1000, ..SessionLimits::default() };
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096).with_limits(limits);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        let _ = drain(&mut q);
        let body: std::sync::Arc<[u8]> = vec![7u8; 1 << 20].into();
        let pre = Prechunked::new(&body, 4096, MediaKind::Video.csid());
        for _ in 0..4 {
            s.queue_media(1, 0, MediaKind::Video, &pre, &mut q);
            c.send(&mut s, &mut q, MSG_USER_CONTROL, 0, &ping_request(1));
        }
        assert!(q.len() > 4 << 20);
        // Our own bytes behind the media still count once they pile up.
        let mut b = Vec::new();
        for t in 0..200 {
            c.tx.encode(3, 0, MSG_USER_CONTROL, 0, &ping_request(t), &mut b);
        }
        assert!(matches!(s.handle_input(&b, &mut q), Err(RtmpError::OutputOverBudget { budget: 1000, .. })));
    }

    #[test]
    fn tiny_window_ack_size_is_raised() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        c.send(&mut s, &mut q, MSG_WINDOW_ACK_SIZE, 0, &1u32.to_be_bytes());
        let _ = drain(&mut q);
        // 400 KB of audio in 1 KB messages: one ack per 4 KiB, not per chunk.
        let mut sent = 0;
        for _ in 0..400 {
            let mut b = Vec::new();
            c.tx.encode(4, 0, MSG_AUDIO, 1, &[0xAF; 1000], &mut b);
            sent += b.len();
            assert_eq!(s.handle_input(&b, &mut q).unwrap(), b.len());
            while s.poll_event().is_some() {}
        }
        let acks = c.recv(&mut q).iter().filter(|m| m.type_id == MSG_ACK).count();
        // (An ack goes out at the first chunk boundary past each 4 KiB.)
        let (most, least) = (sent / MIN_PEER_WINDOW as usize, sent / (MIN_PEER_WINDOW as usize + 200));
        assert!((least..=most).contains(&acks), "{acks} acks for {sent} bytes");
        // A window above the floor is kept as asked.
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut c = Client::connect(&mut s, &mut q);
        c.send(&mut s, &mut q, MSG_WINDOW_ACK_SIZE, 0, &100_000u32.to_be_bytes());
        assert_eq!(s.wire.peer_window, 100_000);
        c.send(&mut s, &mut q, MSG_WINDOW_ACK_SIZE, 0, &0u32.to_be_bytes());
        assert_eq!(s.wire.peer_window, MIN_PEER_WINDOW);
    }

    #[test]
    fn eight_megabyte_command_is_refused_at_its_header() {
        // The issue-15 attack: an 8 MB `ping` made of AMF0 nulls.
        let mut body = Vec::new();
        amf0::encode_all(&[Value::String("ping".into()), Value::Number(0.0)], &mut body);
        body.resize(8 << 20, 0x05);
        let wire = chunked(MSG_COMMAND_AMF0, &body, 128);
        let mut s = RtmpSession::new(1, 0, 8 << 20, 4096);
        let mut q = SendQueue::new();
        let _c = Client::connect(&mut s, &mut q);
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| s.handle_input(&wire, &mut q));
        let e = r.unwrap_err();
        assert_eq!(
            e,
            RtmpError::Chunk(ChunkError::CommandTooLarge { type_id: 20, len: 8 << 20, limit: DEFAULT_MAX_COMMAND_LEN })
        );
        assert_eq!(
            e.to_string(),
            "AMF0 command message (type 20) of 8388608 bytes exceeds the 65536-byte limit for non-media messages"
        );
        assert!(peak < 64 * 1024, "peak {peak} bytes");
        // Data messages have the same limit; media keeps the message limit.
        let mut s = RtmpSession::new(1, 0, 8 << 20, 4096);
        let _c = Client::connect(&mut s, &mut q);
        let e = s.handle_input(&chunked(MSG_DATA_AMF0, &vec![5; 70_000], 4096), &mut q).unwrap_err();
        assert!(matches!(e, RtmpError::Chunk(ChunkError::CommandTooLarge { type_id: 18, len: 70_000, .. })), "{e:?}");
        let mut s = RtmpSession::new(1, 0, 8 << 20, 4096);
        let _c = Client::connect(&mut s, &mut q);
        let mut wire = chunked(MSG_SET_CHUNK_SIZE, &65_536u32.to_be_bytes(), 128);
        wire.extend(chunked(MSG_VIDEO, &vec![0x17; 3 << 20], 65_536));
        assert_eq!(s.handle_input(&wire, &mut q).unwrap(), wire.len());
        assert!(matches!(s.poll_event(), Some(RtmpEvent::Media { kind: MediaKind::Video, .. })));
    }

    #[test]
    fn command_of_nulls_under_the_size_limit_fails_on_values() {
        let mut body = Vec::new();
        amf0::encode_all(&[Value::String("ping".into()), Value::Number(0.0)], &mut body);
        body.resize(DEFAULT_MAX_COMMAND_LEN as usize, 0x05);
        let mut s = RtmpSession::new(1, 0, 8 << 20, 4096);
        let mut q = SendQueue::new();
        let _c = Client::connect(&mut s, &mut q);
        let wire = chunked(MSG_COMMAND_AMF0, &body, 128);
        let (r, peak) = crate::sync::alloc_meter::peak_bytes(|| s.handle_input(&wire, &mut q));
        let e = r.unwrap_err();
        assert_eq!(e, RtmpError::Amf(AmfError::TooManyValues));
        assert_eq!(e.to_string(), "command: AMF message has more than 8192 values");
        // The message buffer (64 KiB, at most doubled while it grew) plus at
        // most MAX_VALUES decoded values.
        assert!(peak < 8 * DEFAULT_MAX_COMMAND_LEN as usize, "peak {peak} bytes");
        // A smaller limit from the shell.
        let limits = SessionLimits { max_command: 1000, ..SessionLimits::default() };
        let mut s = RtmpSession::new(1, 0, 8 << 20, 4096).with_limits(limits);
        let _c = Client::connect(&mut s, &mut q);
        let e = s.handle_input(&chunked(MSG_COMMAND_AMF0, &body[..1001], 128), &mut q).unwrap_err();
        assert!(matches!(e, RtmpError::Chunk(ChunkError::CommandTooLarge { len: 1001, limit: 1000, .. })), "{e:?}");
    }

    #[test]
    fn empty_media_messages_are_dropped() {
        let mut s = RtmpSession::new(1, 0, 1 << 20, 4096);
        let mut q = SendQueue::new();
        let mut c = Client::connect(&mut s, &mut q);
        c.send(&mut s, &mut q, MSG_AUDIO, 1, &[]);
        c.send(&mut s, &mut q, MSG_VIDEO, 1, &[]);
        assert_eq!(s.poll_event(), None);
        assert_eq!(s.stats.dropped_messages, 2);
    }
}
