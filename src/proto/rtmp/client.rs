//! The RTMP client role, for pushing a stream to another server (restream to
//! YouTube/Twitch-style ingest, a CDN, nginx-rtmp, SRS), as a sans-IO state
//! machine beside the server session.
//!
//! [`PushUrl::parse`] splits a destination URL. [`RtmpClient::new`] queues
//! C0+C1 (the digest form Flash Player and ffmpeg send; a plain server gets the
//! echo of its S1); feed received bytes to [`RtmpClient::handle_input`]. Once
//! the handshake is done the client sends, as an encoder does:
//! Set Chunk Size, `connect` (app and tcUrl from the URL, `type: nonprivate`,
//! an FMLE `flashVer`), then on its `_result` `releaseStream`, `FCPublish`,
//! `createStream`, and on that `_result` `publish(key, "live")`. The
//! destination's `NetStream.Publish.Start` makes it [`ClientEvent::Live`];
//! media then goes out with [`RtmpClient::queue_media`] (the shared,
//! pre-chunked bodies of the fan-out path) and metadata with
//! [`RtmpClient::queue_metadata`] (as `@setDataFrame onMetaData`).
//!
//! Answered along the way: Set Chunk Size and Abort from the destination,
//! Window Acknowledgement Size (acknowledgements sent), Set Peer Bandwidth
//! (our window size once, as librtmp does), PingRequest (PingResponse).
//! `_error` to connect or createStream, and an `onStatus` of level error,
//! end the session with the destination's code and description
//! ([`ClientError`]); so does a `close` command.
//!
//! Bounds: a message from the destination may be at most
//! [`MAX_INBOUND_MESSAGE`] bytes (it sends us commands and control only), and
//! our unread replies are bounded like the server session's.
//!
//! Not implemented: Adobe/Limelight challenge authentication (`authmod=adobe`;
//! credentials in the URL are passed in the tcUrl as given), RTMPE, RTMPT.

use std::collections::VecDeque;
use std::fmt;

use super::amf::{AmfError, Value};
use super::amf0;
use super::chunk::{ChunkDecoder, ChunkError, Prechunked, RawMessage, DEFAULT_MAX_COMMAND_LEN};
use super::wire::{Control, ControlError, Wire};
use super::handshake::{HandshakeClient, HandshakeError};
use super::session::{
    CSID_COMMAND, DEFAULT_OUTPUT_BUDGET, MSG_AUDIO, MSG_COMMAND_AMF0, MSG_COMMAND_AMF3, MSG_DATA_AMF0, MSG_SET_CHUNK_SIZE,
    MSG_SET_PEER_BANDWIDTH, MSG_USER_CONTROL, MSG_VIDEO, MSG_WINDOW_ACK_SIZE, UC_SET_BUFFER_LENGTH, WINDOW_ACK_SIZE,
};
use crate::buf::SendQueue;
use crate::proto::flv::MediaKind;

/// Largest message we accept from a destination: it only sends commands and
/// control messages (anything larger ends the session).
pub const MAX_INBOUND_MESSAGE: u32 = 256 * 1024;

/// The flashVer an encoder announces (FMLE-style; servers such as Wowza and
/// some CDNs look for "FMLE" to treat the client as a publisher).
const FLASH_VER: &str = "FMLE/3.0 (compatible; rtcbridge)";

// Transaction ids of our calls.
const TID_CONNECT: f64 = 1.0;
const TID_RELEASE: f64 = 2.0;
const TID_FCPUBLISH: f64 = 3.0;
const TID_CREATE: f64 = 4.0;
const TID_PUBLISH: f64 = 5.0;

/// Chunk stream for our NetStream commands (publish, FCUnpublish, deleteStream).
const CSID_STREAM_CMD: u32 = 8;

// ---------------------------------------------------------------------------
// Destination URLs
// ---------------------------------------------------------------------------

/// A push destination: `rtmp[s]://[user:pass@]host[:port]/app[/more]/key[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    /// rtmps:// (TLS).
    pub secure: bool,
    /// Host name or address (without brackets for IPv6).
    pub host: String,
    pub port: u16,
    /// Everything between the host and the stream key (`live`, `live/sub`).
    pub app: String,
    /// The URL without the stream key: what `connect` sends as tcUrl.
    pub tc_url: String,
    /// The stream key with its query string, as `publish` sends it.
    pub key: String,
    /// The URL with a password replaced by `***` (logs, the API).
    pub display: String,
}

/// Why a destination URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Not `scheme://...` at all.
    NotAUrl,
    UnsupportedScheme(String),
    NoHost,
    BadPort(String),
    /// No `/app/key` after the host.
    NoApp,
    NoKey,
    /// Spaces or control characters.
    BadCharacter,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NotAUrl => f.write_str("not a URL (rtmp://host[:port]/app/key)"),
            UrlError::UnsupportedScheme(s) => write!(f, "unsupported scheme '{s}' (rtmp:// or rtmps://)"),
            UrlError::NoHost => f.write_str("no host (rtmp://host[:port]/app/key)"),
            UrlError::BadPort(p) => write!(f, "bad port '{p}'"),
            UrlError::NoApp => f.write_str("no application (rtmp://host/app/key)"),
            UrlError::NoKey => f.write_str("no stream key (rtmp://host/app/key)"),
            UrlError::BadCharacter => f.write_str("spaces or control characters in the URL"),
        }
    }
}

impl PushUrl {
    pub fn parse(url: &str) -> Result<PushUrl, UrlError> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadCharacter);
        }
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NotAUrl)?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => false,
            "rtmps" => true,
            "" => return Err(UrlError::NotAUrl),
            other => return Err(UrlError::UnsupportedScheme(other.chars().take(16).collect())),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let default_port = if secure { 443 } else { 1935 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(UrlError::NoHost)?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => default_port,
                None => return Err(UrlError::NoHost),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p)?),
                None => (hostport.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        // The key is the last segment (with the query); the app is the rest.
        let (path_part, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let path_part = path_part.trim_end_matches('/');
        let (app, key) = path_part.rsplit_once('/').ok_or(if path_part.is_empty() { UrlError::NoApp } else { UrlError::NoKey })?;
        if app.is_empty() || app.split('/').any(str::is_empty) {
            return Err(UrlError::NoApp);
        }
        if key.is_empty() {
            return Err(UrlError::NoKey);
        }
        let key = match query {
            Some(q) => format!("{key}?{q}"),
            None => key.to_owned(),
        };
        let scheme_l = if secure { "rtmps" } else { "rtmp" };
        let tc_url = format!("{scheme_l}://{authority}/{app}");
        let shown_auth = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hostport}"),
                None => format!("{u}@{hostport}"),
            },
            None => hostport.to_owned(),
        };
        // A stream key is a secret too (YouTube, Twitch): show only its start.
        let display = format!("{scheme_l}://{shown_auth}/{app}/{}", redact_key(&key));
        Ok(PushUrl { secure, host, port, app: app.to_owned(), tc_url, key, display })
    }

    /// Flashphoner's re-publishing destination: `rtmp_url` + "/" + `name`.
    pub fn join(rtmp_url: &str, name: &str) -> String {
        format!("{}/{name}", rtmp_url.trim_end_matches('/'))
    }
}

/// The stream key as logs and the API show it: a key of up to 16 characters
/// (a stream name such as Flashphoner's `rtmp_NAME`) as it is; a longer one,
/// the secret kind ingest services hand out, its first 6 characters then `***`;
/// a query string as `?***` (query strings hold tokens too).
fn redact_key(key: &str) -> String {
    let base = key.split('?').next().unwrap_or("");
    let shown: String = if base.chars().count() > 16 { format!("{}***", base.chars().take(6).collect::<String>()) } else { base.to_owned() };
    if key.contains('?') {
        format!("{shown}?***")
    } else {
        shown
    }
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UrlError::BadPort(p.chars().take(16).collect())),
    }
}

// ---------------------------------------------------------------------------
// The session
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    Handshake(HandshakeError),
    Chunk(ChunkError),
    Amf(AmfError),
    BadCommand,
    BadControl,
    /// `_error` to connect (NetConnection.Connect.Rejected, ...).
    ConnectRefused { code: String, description: String },
    /// `_error` to createStream.
    CreateStreamRefused { description: String },
    /// `onStatus` of level error (NetStream.Publish.BadName, ...).
    PublishRefused { code: String, description: String },
    /// Play role: `onStatus` of level error (NetStream.Play.StreamNotFound, ...).
    PlayRefused { code: String, description: String },
    /// The destination sent `close`.
    ClosedByDestination,
    /// The destination does not read our replies (see the server session).
    OutputOverBudget { queued: usize, budget: usize },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Handshake(e) => write!(f, "handshake: {e}"),
            ClientError::Chunk(e) => write!(f, "{e}"),
            ClientError::Amf(e) => write!(f, "command: {e}"),
            ClientError::BadCommand => f.write_str("command message without name and transaction id"),
            ClientError::BadControl => f.write_str("protocol control message with a bad length"),
            ClientError::ConnectRefused { code, description } => {
                write!(f, "destination refused connect: {code}: {description}")
            }
            ClientError::CreateStreamRefused { description } => write!(f, "destination refused createStream: {description}"),
            ClientError::PublishRefused { code, description } => {
                write!(f, "destination refused publish: {code}: {description}")
            }
            ClientError::PlayRefused { code, description } => write!(f, "origin refused play: {code}: {description}"),
            ClientError::ClosedByDestination => f.write_str("destination sent close"),
            ClientError::OutputOverBudget { queued, budget } => {
                write!(f, "destination does not read: {queued} bytes of replies unsent (budget {budget})")
            }
        }
    }
}

impl From<ChunkError> for ClientError {
    fn from(e: ChunkError) -> Self {
        ClientError::Chunk(e)
    }
}

/// Where the client is in its conversation with the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPhase {
    Handshake,
    /// `connect` sent, awaiting `_result`.
    Connecting,
    /// `createStream` sent.
    CreatingStream,
    /// `publish` sent, awaiting NetStream.Publish.Start.
    Publishing,
    /// Media may flow.
    Live,
}

impl ClientPhase {
    /// For "the destination closed the connection during ...".
    pub fn describe(self) -> &'static str {
        match self {
            ClientPhase::Handshake => "the handshake",
            ClientPhase::Connecting => "connect",
            ClientPhase::CreatingStream => "createStream",
            ClientPhase::Publishing => "publish",
            ClientPhase::Live => "the push",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Publish role: NetStream.Publish.Start, media may be sent (`opus`: the
    /// destination's connect result listed Enhanced RTMP Opus in `fourCcList`).
    /// Play role: NetStream.Play.Start, media follows.
    Live { opus: bool },
    /// Play role: audio, video or metadata (`onMetaData` and its values, AMF0).
    Media { kind: MediaKind, ts: u32, payload: Vec<u8> },
    /// Play role: the origin's publisher is gone for good (UnpublishNotify,
    /// Play.Stop, Play.Complete).
    Unpublished,
    /// Play role: a publisher started again (PublishNotify).
    Republished,
}

/// What the client does once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// Push our stream to the server.
    Publish,
    /// Pull the server's stream (a cluster node pulling from the stream's owner).
    Play,
}

pub struct RtmpClient {
    role: ClientRole,
    phase: ClientPhase,
    handshake: HandshakeClient,
    rx: ChunkDecoder,
    wire: Wire,
    chunk_size: usize,
    app: String,
    tc_url: String,
    key: String,
    msid: u32,
    events: VecDeque<ClientEvent>,
    window_sent: bool,
    opus: bool,
    /// Messages from the destination we do not act on (counted).
    pub ignored: u64,
}

impl fmt::Debug for RtmpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtmpClient").field("phase", &self.phase).field("msid", &self.msid).finish_non_exhaustive()
    }
}

impl RtmpClient {
    /// Start a push to `url`: C0+C1 are queued on `q`. Media goes out at
    /// `chunk_size` (the server-wide size, so shared bodies are reused).
    pub fn new(url: &PushUrl, seed: u64, epoch_ms: u32, chunk_size: usize, q: &mut SendQueue) -> Self {
        Self::with_role(ClientRole::Publish, url, seed, epoch_ms, chunk_size, MAX_INBOUND_MESSAGE, q)
    }

    /// Pull `url`'s stream: connect, createStream, play; media arrives as
    /// [`ClientEvent::Media`], messages up to `max_message` bytes.
    pub fn new_play(url: &PushUrl, seed: u64, epoch_ms: u32, max_message: u32, q: &mut SendQueue) -> Self {
        Self::with_role(ClientRole::Play, url, seed, epoch_ms, 4096, max_message, q)
    }

    fn with_role(role: ClientRole, url: &PushUrl, seed: u64, epoch_ms: u32, chunk_size: usize, max_message: u32, q: &mut SendQueue) -> Self {
        let mut out = Vec::new();
        let handshake = HandshakeClient::new_digest(seed, epoch_ms, &mut out);
        q.push_vec(out);
        let mut rx = ChunkDecoder::new(max_message);
        rx.set_max_command_len(DEFAULT_MAX_COMMAND_LEN);
        RtmpClient {
            role,
            phase: ClientPhase::Handshake,
            handshake,
            rx,
            wire: Wire::default(),
            chunk_size,
            app: url.app.clone(),
            tc_url: url.tc_url.clone(),
            key: url.key.clone(),
            msid: 0,
            events: VecDeque::new(),
            window_sent: false,
            opus: false,
            ignored: 0,
        }
    }

    pub fn phase(&self) -> ClientPhase {
        self.phase
    }

    pub fn is_live(&self) -> bool {
        self.phase == ClientPhase::Live
    }

    /// The chunk size media must be pre-chunked at.
    pub fn out_chunk_size(&self) -> usize {
        self.wire.tx.chunk_size()
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Consume handshake bytes and chunks from the front of `input`; returns
    /// the bytes consumed. Replies and our next calls go to `q`. `Err` is fatal.
    pub fn handle_input(&mut self, input: &[u8], q: &mut SendQueue) -> Result<usize, ClientError> {
        let mut used = 0;
        self.check_output(q)?;
        if self.phase == ClientPhase::Handshake {
            let mut out = Vec::new();
            used = self.handshake.handle_input(input, &mut out).map_err(ClientError::Handshake)?;
            if !self.handshake.is_done() {
                return Ok(used);
            }
            self.wire.emit(out, q);
            self.start_connect(q);
        }
        loop {
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
            self.wire.count_received(n as u32, q);
            if let Some(m) = msg {
                self.handle_message(m, q)?;
            }
        }
        Ok(used)
    }

    /// Queue one shared media message at timestamp `ts` (Live only).
    pub fn queue_media(&mut self, ts: u32, kind: MediaKind, body: &Prechunked, q: &mut SendQueue) {
        if self.phase != ClientPhase::Live {
            return;
        }
        super::chunk::queue_prechunked(&mut self.wire.tx, &mut self.wire.scratch, kind, self.msid, ts, body, q);
    }

    /// Queue stream metadata: `body` is `onMetaData` and its values (AMF0, as
    /// the relay keeps it); it goes out as `@setDataFrame onMetaData ...`.
    pub fn queue_metadata(&mut self, ts: u32, body: &[u8], q: &mut SendQueue) {
        if self.phase != ClientPhase::Live {
            return;
        }
        let mut payload = Vec::with_capacity(body.len() + 16);
        amf0::encode(&Value::String("@setDataFrame".into()), &mut payload);
        payload.extend_from_slice(body);
        self.wire.scratch.clear();
        self.wire.tx.encode(MediaKind::Data.csid(), ts, MSG_DATA_AMF0, self.msid, &payload, &mut self.wire.scratch);
        q.push_vec(std::mem::take(&mut self.wire.scratch));
    }

    /// A clean end: FCUnpublish and deleteStream (the destination ends its
    /// stream at once instead of waiting for a timeout).
    pub fn finish(&mut self, q: &mut SendQueue) {
        if self.phase != ClientPhase::Live {
            return;
        }
        let key = self.key.clone();
        self.command(0, CSID_COMMAND, &[Value::String("FCUnpublish".into()), Value::Number(6.0), Value::Null, Value::String(key)], q);
        let msid = f64::from(self.msid);
        self.command(0, CSID_COMMAND, &[Value::String("deleteStream".into()), Value::Number(7.0), Value::Null, Value::Number(msid)], q);
        self.phase = ClientPhase::Publishing;
    }

    fn start_connect(&mut self, q: &mut SendQueue) {
        self.control(MSG_SET_CHUNK_SIZE, &(self.chunk_size as u32).to_be_bytes(), q);
        self.wire.tx.set_chunk_size(self.chunk_size);
        let obj = Value::Object(vec![
            ("app".into(), Value::String(self.app.clone())),
            ("type".into(), Value::String("nonprivate".into())),
            ("flashVer".into(), Value::String(FLASH_VER.into())),
            ("tcUrl".into(), Value::String(self.tc_url.clone())),
        ]);
        self.command(0, CSID_COMMAND, &[Value::String("connect".into()), Value::Number(TID_CONNECT), obj], q);
        self.phase = ClientPhase::Connecting;
    }

    fn handle_message(&mut self, m: RawMessage, q: &mut SendQueue) -> Result<(), ClientError> {
        match self.wire.handle_control(&mut self.rx, &m, q) {
            Ok(Control::Handled) => return Ok(()),
            Ok(Control::Malformed) => {
                self.ignored += 1;
                return Ok(());
            }
            Ok(Control::Other) => {}
            Err(ControlError::BadLength) => return Err(ClientError::BadControl),
            Err(ControlError::Chunk(e)) => return Err(ClientError::Chunk(e)),
        }
        match m.type_id {
            MSG_SET_PEER_BANDWIDTH => {
                if m.payload.len() < 4 {
                    return Err(ClientError::BadControl);
                }
                if !self.window_sent {
                    self.window_sent = true;
                    self.control(MSG_WINDOW_ACK_SIZE, &WINDOW_ACK_SIZE.to_be_bytes(), q);
                }
            }
            MSG_COMMAND_AMF0 | MSG_COMMAND_AMF3 => {
                let body = if m.type_id == MSG_COMMAND_AMF3 { m.payload.get(1..).unwrap_or(&[]) } else { &m.payload[..] };
                let values = amf0::decode_all(body).map_err(ClientError::Amf)?;
                self.handle_command(values, q)?;
            }
            MSG_AUDIO | MSG_VIDEO if self.role == ClientRole::Play && self.phase == ClientPhase::Live && !m.payload.is_empty() => {
                let kind = if m.type_id == MSG_AUDIO { MediaKind::Audio } else { MediaKind::Video };
                self.events.push_back(ClientEvent::Media { kind, ts: m.timestamp, payload: m.payload });
            }
            MSG_DATA_AMF0 if self.role == ClientRole::Play && self.phase == ClientPhase::Live => {
                match metadata_body(&m.payload) {
                    Some(payload) => self.events.push_back(ClientEvent::Media { kind: MediaKind::Data, ts: m.timestamp, payload }),
                    None => self.ignored += 1,
                }
            }
            _ => self.ignored += 1,
        }
        Ok(())
    }

    fn handle_command(&mut self, values: Vec<Value>, q: &mut SendQueue) -> Result<(), ClientError> {
        let mut it = values.into_iter();
        let name = match it.next() {
            Some(Value::String(s)) => s,
            _ => return Err(ClientError::BadCommand),
        };
        let tid = it.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
        let props = it.next().unwrap_or(Value::Null);
        let info = it.next().unwrap_or(Value::Null);
        let code = || clean(info.get("code").and_then(Value::as_str).unwrap_or(""));
        let description = || clean(info.get("description").and_then(Value::as_str).unwrap_or(""));
        match name.as_str() {
            "_result" if tid == TID_CONNECT && self.phase == ClientPhase::Connecting && self.role == ClientRole::Play => {
                self.command(0, CSID_COMMAND, &[Value::String("createStream".into()), Value::Number(TID_CREATE), Value::Null], q);
                self.phase = ClientPhase::CreatingStream;
            }
            "_result" if tid == TID_CONNECT && self.phase == ClientPhase::Connecting => {
                self.opus = [&props, &info].iter().any(|o| match o.get("fourCcList") {
                    Some(Value::StrictArray(v)) => v.iter().any(|x| x.as_str() == Some("Opus")),
                    _ => false,
                });
                let key = self.key.clone();
                self.command(0, CSID_COMMAND, &[
                    Value::String("releaseStream".into()),
                    Value::Number(TID_RELEASE),
                    Value::Null,
                    Value::String(key.clone()),
                ], q);
                self.command(0, CSID_COMMAND, &[
                    Value::String("FCPublish".into()),
                    Value::Number(TID_FCPUBLISH),
                    Value::Null,
                    Value::String(key),
                ], q);
                self.command(0, CSID_COMMAND, &[Value::String("createStream".into()), Value::Number(TID_CREATE), Value::Null], q);
                self.phase = ClientPhase::CreatingStream;
            }
            "_error" if tid == TID_CONNECT => {
                return Err(ClientError::ConnectRefused { code: code(), description: description() });
            }
            "_result" if tid == TID_CREATE && self.phase == ClientPhase::CreatingStream => {
                let id = info.as_f64().unwrap_or(1.0);
                self.msid = if (1.0..65536.0).contains(&id) { id as u32 } else { 1 };
                let key = self.key.clone();
                let msid = self.msid;
                if self.role == ClientRole::Play {
                    self.command(msid, CSID_STREAM_CMD, &[
                        Value::String("play".into()),
                        Value::Number(TID_PUBLISH),
                        Value::Null,
                        Value::String(key),
                    ], q);
                    // Set Buffer Length (3 s), as players send after play.
                    let mut p = UC_SET_BUFFER_LENGTH.to_be_bytes().to_vec();
                    p.extend_from_slice(&msid.to_be_bytes());
                    p.extend_from_slice(&3000u32.to_be_bytes());
                    self.control(MSG_USER_CONTROL, &p, q);
                    self.phase = ClientPhase::Publishing;
                    return Ok(());
                }
                self.command(msid, CSID_STREAM_CMD, &[
                    Value::String("publish".into()),
                    Value::Number(TID_PUBLISH),
                    Value::Null,
                    Value::String(key),
                    Value::String("live".into()),
                ], q);
                self.phase = ClientPhase::Publishing;
            }
            "_error" if tid == TID_CREATE => {
                return Err(ClientError::CreateStreamRefused { description: description() });
            }
            "onStatus" => {
                let level = info.get("level").and_then(Value::as_str).unwrap_or("");
                if level == "error" && self.role == ClientRole::Play {
                    return Err(ClientError::PlayRefused { code: code(), description: description() });
                }
                if level == "error" {
                    return Err(ClientError::PublishRefused { code: code(), description: description() });
                }
                if self.role == ClientRole::Play {
                    match code().as_str() {
                        "NetStream.Play.Start" if self.phase == ClientPhase::Publishing => {
                            self.phase = ClientPhase::Live;
                            self.events.push_back(ClientEvent::Live { opus: false });
                        }
                        "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop" | "NetStream.Play.Complete" => {
                            self.events.push_back(ClientEvent::Unpublished);
                        }
                        "NetStream.Play.PublishNotify" => self.events.push_back(ClientEvent::Republished),
                        _ => {}
                    }
                    return Ok(());
                }
                if code() == "NetStream.Publish.Start" && self.phase == ClientPhase::Publishing {
                    self.phase = ClientPhase::Live;
                    self.events.push_back(ClientEvent::Live { opus: self.opus });
                }
            }
            "close" => return Err(ClientError::ClosedByDestination),
            // _result/_error of releaseStream and FCPublish, onFCPublish, onBWDone, ...
            _ => {}
        }
        Ok(())
    }

    fn check_output(&mut self, q: &SendQueue) -> Result<(), ClientError> {
        match self.wire.over_budget(q, DEFAULT_OUTPUT_BUDGET) {
            Some((queued, budget)) => Err(ClientError::OutputOverBudget { queued, budget }),
            None => Ok(()),
        }
    }

    fn control(&mut self, type_id: u8, payload: &[u8], q: &mut SendQueue) {
        self.wire.control(type_id, payload, q);
    }

    fn command(&mut self, msid: u32, csid: u32, values: &[Value], q: &mut SendQueue) {
        self.wire.command(msid, csid, values, q);
    }
}

/// A data message from the origin as the relay keeps metadata: `onMetaData`
/// and its values (`@setDataFrame` dropped); None for anything else.
fn metadata_body(payload: &[u8]) -> Option<Vec<u8>> {
    let values = amf0::decode_all(payload).ok()?;
    let mut it = values.into_iter().peekable();
    if it.peek().and_then(Value::as_str) == Some("@setDataFrame") {
        it.next();
    }
    if it.peek().and_then(Value::as_str) != Some("onMetaData") {
        return None;
    }
    let rest: Vec<Value> = it.collect();
    let mut out = Vec::new();
    amf0::encode_all(&rest, &mut out);
    Some(out)
}

/// A string the destination chose, fit for a log line and the API: control
/// characters replaced, at most 200 characters.
fn clean(s: &str) -> String {
    let mut out: String = s.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::rtmp::handshake::HandshakeKind;
    use crate::proto::rtmp::session::{RtmpEvent, RtmpSession};

    fn drain(q: &mut SendQueue) -> Vec<u8> {
        let mut v = Vec::new();
        while !q.is_empty() {
            q.write_to(&mut v).unwrap();
        }
        v
    }

    #[test]
    fn parses_urls() {
        let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop-qrst").unwrap();
        assert_eq!((u.secure, u.host.as_str(), u.port, u.app.as_str()), (false, "a.rtmp.youtube.com", 1935, "live2"));
        assert_eq!(u.tc_url, "rtmp://a.rtmp.youtube.com/live2");
        assert_eq!(u.key, "abcd-efgh-ijkl-mnop-qrst");
        assert_eq!(u.display, "rtmp://a.rtmp.youtube.com/live2/abcd-e***");
        assert_eq!(PushUrl::parse("rtmp://h/live/rtmp_camera1").unwrap().display, "rtmp://h/live/rtmp_camera1");
        let u = PushUrl::parse("rtmps://bob:secret@[::1]:4443/app/sub/key?token=x").unwrap();
        assert_eq!((u.secure, u.host.as_str(), u.port), (true, "::1", 4443));
        assert_eq!((u.app.as_str(), u.key.as_str()), ("app/sub", "key?token=x"));
        assert_eq!(u.tc_url, "rtmps://bob:secret@[::1]:4443/app/sub");
        assert_eq!(u.display, "rtmps://bob:***@[::1]:4443/app/sub/key?***");
        assert_eq!(PushUrl::parse("rtmps://h/a/k").unwrap().port, 443);
        assert_eq!(PushUrl::parse("http://h/a/k"), Err(UrlError::UnsupportedScheme("http".into())));
        assert_eq!(PushUrl::parse("nonsense"), Err(UrlError::NotAUrl));
        assert_eq!(PushUrl::parse("rtmp:///a/k"), Err(UrlError::NoHost));
        assert_eq!(PushUrl::parse("rtmp://h:99999/a/k"), Err(UrlError::BadPort("99999".into())));
        assert_eq!(PushUrl::parse("rtmp://h"), Err(UrlError::NoApp));
        assert_eq!(PushUrl::parse("rtmp://h/live"), Err(UrlError::NoKey));
        assert_eq!(PushUrl::parse("rtmp://h/live/"), Err(UrlError::NoKey));
        assert_eq!(PushUrl::parse("rtmp://h/a b/k"), Err(UrlError::BadCharacter));
        assert_eq!(PushUrl::join("rtmp://h/live/", "rtmp_cam"), "rtmp://h/live/rtmp_cam");
    }

    /// Our client against our own server session, byte for byte in memory.
    fn converse(c: &mut RtmpClient, cq: &mut SendQueue, s: &mut RtmpSession, sq: &mut SendQueue) -> Vec<RtmpEvent> {
        let mut evs = Vec::new();
        for _ in 0..20 {
            let to_s = drain(cq);
            if !to_s.is_empty() {
                let n = s.handle_input(&to_s, sq).unwrap();
                assert_eq!(n, to_s.len());
            }
            while let Some(e) = s.poll_event() {
                match &e {
                    RtmpEvent::ConnectRequested { .. } => s.connect_accept(sq),
                    RtmpEvent::PublishRequested { msid, name, .. } => s.publish_ok(*msid, name, sq),
                    _ => {}
                }
                evs.push(e);
            }
            let to_c = drain(sq);
            if !to_c.is_empty() {
                let n = c.handle_input(&to_c, cq).unwrap();
                assert_eq!(n, to_c.len());
            }
            if to_s.is_empty() && to_c.is_empty() && cq.is_empty() {
                break;
            }
        }
        evs
    }

    #[test]
    fn publishes_to_our_server_with_digest_handshake() {
        let url = PushUrl::parse("rtmp://127.0.0.1/live/cam?k=1").unwrap();
        let (mut cq, mut sq) = (SendQueue::new(), SendQueue::new());
        let mut c = RtmpClient::new(&url, 7, 0, 4096, &mut cq);
        let mut s = RtmpSession::new(9, 0, 1 << 20, 4096);
        let evs = converse(&mut c, &mut cq, &mut s, &mut sq);
        assert_eq!(c.handshake.kind(), Some(HandshakeKind::Digest));
        assert!(evs.contains(&RtmpEvent::ConnectRequested { app: "live".into() }), "{evs:?}");
        assert!(evs.iter().any(|e| matches!(e, RtmpEvent::PublishRequested { name, query, .. } if name == "cam" && query == "k=1")), "{evs:?}");
        assert_eq!(c.poll_event(), Some(ClientEvent::Live { opus: false }));
        assert!(c.is_live());
        // Media and metadata arrive as the server's publisher events.
        let body: std::sync::Arc<[u8]> = vec![0x17, 0, 0, 0, 0, 1, 2, 3].into();
        let pre = Prechunked::new(&body, 4096, MediaKind::Video.csid());
        c.queue_media(40, MediaKind::Video, &pre, &mut cq);
        let mut meta = Vec::new();
        amf0::encode_all(&[Value::String("onMetaData".into()), Value::EcmaArray(vec![("width".into(), Value::Number(640.0))])], &mut meta);
        c.queue_metadata(40, &meta, &mut cq);
        let evs = converse(&mut c, &mut cq, &mut s, &mut sq);
        assert!(evs.iter().any(|e| matches!(e, RtmpEvent::Media { kind: MediaKind::Video, ts: 40, payload, .. } if payload[..] == body[..])), "{evs:?}");
        assert!(evs.iter().any(|e| matches!(e, RtmpEvent::Media { kind: MediaKind::Data, payload, .. } if payload == &meta)), "{evs:?}");
    }

    #[test]
    fn plays_from_our_server_and_gets_media_and_status() {
        let url = PushUrl::parse("rtmp://127.0.0.1/live/cam").unwrap();
        let (mut cq, mut sq) = (SendQueue::new(), SendQueue::new());
        let mut c = RtmpClient::new_play(&url, 7, 0, 1 << 20, &mut cq);
        let mut s = RtmpSession::new(9, 0, 1 << 20, 4096);
        let mut msid = 0;
        for _ in 0..20 {
            let b = drain(&mut cq);
            if !b.is_empty() {
                s.handle_input(&b, &mut sq).unwrap();
            }
            while let Some(e) = s.poll_event() {
                match e {
                    RtmpEvent::ConnectRequested { .. } => s.connect_accept(&mut sq),
                    RtmpEvent::PlayRequested { msid: m, name, .. } => {
                        assert_eq!(name, "cam");
                        msid = m;
                        s.play_start(m, &name, &mut sq);
                    }
                    _ => {}
                }
            }
            let b = drain(&mut sq);
            if !b.is_empty() {
                c.handle_input(&b, &mut cq).unwrap();
            }
        }
        assert_eq!(c.poll_event(), Some(ClientEvent::Live { opus: false }));
        let body: std::sync::Arc<[u8]> = vec![0xAF, 0, 0x12, 0x10].into();
        let pre = Prechunked::new(&body, 4096, MediaKind::Audio.csid());
        s.queue_media(msid, 20, MediaKind::Audio, &pre, &mut sq);
        s.unpublish_notify(msid, "cam", &mut sq);
        let b = drain(&mut sq);
        c.handle_input(&b, &mut cq).unwrap();
        assert_eq!(c.poll_event(), Some(ClientEvent::Media { kind: MediaKind::Audio, ts: 20, payload: body.to_vec() }));
        assert_eq!(c.poll_event(), Some(ClientEvent::Unpublished));
    }

    #[test]
    fn connect_rejection_names_code_and_description() {
        let url = PushUrl::parse("rtmp://127.0.0.1/live/cam").unwrap();
        let (mut cq, mut sq) = (SendQueue::new(), SendQueue::new());
        let mut c = RtmpClient::new(&url, 7, 0, 4096, &mut cq);
        let mut s = RtmpSession::new(9, 0, 1 << 20, 4096);
        let mut err = None;
        for _ in 0..10 {
            let b = drain(&mut cq);
            s.handle_input(&b, &mut sq).unwrap();
            while let Some(e) = s.poll_event() {
                if let RtmpEvent::ConnectRequested { .. } = e {
                    s.connect_reject("go away", &mut sq);
                }
            }
            let b = drain(&mut sq);
            if let Err(e) = c.handle_input(&b, &mut cq) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("connect refused");
        assert_eq!(e.to_string(), "destination refused connect: NetConnection.Connect.Rejected: go away");
    }

    #[test]
    fn plain_server_gets_echo_and_garbage_is_an_error() {
        // A plain S1 (version bytes zero): C2 is the echo of S1.
        let url = PushUrl::parse("rtmp://h/a/k").unwrap();
        let mut q = SendQueue::new();
        let mut c = RtmpClient::new(&url, 1, 0, 4096, &mut q);
        drain(&mut q);
        let mut s0s1s2 = vec![3u8];
        let s1: Vec<u8> = (0..1536u32).map(|i| if (4..8).contains(&i) { 0 } else { i as u8 }).collect();
        s0s1s2.extend_from_slice(&s1);
        s0s1s2.extend_from_slice(&[0u8; 1536]);
        assert_eq!(c.handle_input(&s0s1s2, &mut q).unwrap(), s0s1s2.len());
        let out = drain(&mut q);
        assert_eq!(&out[..1536], &s1[..]);
        assert_eq!(c.phase(), ClientPhase::Connecting);
        // A server that answers with something that is not RTMP.
        let mut c = RtmpClient::new(&url, 1, 0, 4096, &mut q);
        assert!(matches!(c.handle_input(b"HTTP/1.1 400", &mut q), Err(ClientError::Handshake(_))));
    }
}
