//! Flashphoner-compatible signaling messages (the WebSocket protocol of Flashphoner Web Call
//! Server, as spoken by the public Web SDK, npm `@flashphoner/websdk` 2.0.x).
//!
//! Implemented: [`parse_client_msg`] turns one text frame into a [`ClientMsg`]; the builders
//! ([`get_user_data`], [`set_remote_sdp`], [`stream_status`], [`available_stream`],
//! [`fail`], [`ping`], [`pong`]) return the JSON text of every server message the SDK needs
//! to publish and play. No state lives here: the session core decides what to send when.
//!
//! Not implemented: SIP calls (`call`, `hangup`, `hold`, …), REST-app data
//! (`sendData` → `DataStatusEvent`), stream events (`sendStreamEvent` →
//! `notifyStreamEvent`), `snapshot`, `pushLogs`, `submitBugReport`, `sessionDebug`,
//! WebRTC metrics (`webRTCMetricsServerDescription`), and sessions kept alive across
//! reconnects (`keepAlive: true`). Those arrive as [`ClientMsg::Other`].
//!
//! Messages are small control-plane JSON, so they are parsed into owned `serde_json`
//! values (an SDP arrives with escaped `\r\n` and cannot be borrowed anyway). Input is
//! bounded by [`MAX_SIGNAL_MESSAGE`]; `serde_json` limits nesting to 128 levels.
//!
//! # The contract, as read from the SDK source (`src/flashphoner-core.js`)
//!
//! Framing. Every message either way is one WebSocket text frame holding
//! `{"message": NAME, "data": [ ... ]}`. The SDK sends `data: [OBJ]` (one element; `null`
//! for ping/pong) built with `JSON.stringify`, so fields whose value is `undefined` are
//! absent, not null. On every text frame it receives the SDK evaluates `data.data[0]`
//! before dispatching, so **every server message must carry a `data` array** (a missing
//! `data` throws inside `onmessage` and the message is lost). Binary frames are ignored.
//! Unknown message names are logged and ignored.
//!
//! Client → server:
//! - `connection`, sent once on WebSocket open: `{appKey: "defaultApp", mediaProviders:
//!   ["WebRTC","MSE","WSPlayer"] (Chrome), clientVersion: "2.0", clientOSVersion:
//!   navigator.appVersion, clientBrowserVersion: navigator.userAgent,
//!   msePacketizationVersion: 2, clientInfo: {…} (`{}` on plain http; UA hints on https)}`
//!   plus, only when the page set them: `keepAlive`, `authToken`, `custom`, and SIP
//!   fields (`sipLogin`, `sipPassword`, …).
//! - `publishStream`: `{mediaSessionId (a client-made UUID v1), name, published: true,
//!   hasVideo, hasAudio (from the local tracks), status: "PENDING", record: false,
//!   mediaProvider: "WebRTC", sdp (the offer, made before ICE gathering so it has no
//!   candidates), bitrate: 0, minBitrate: 0, maxBitrate: 0, localMediaInfo: {devices:
//!   {video: [{id,label,type}], audio: […]}, tracks: {video: [{trackId, device}], audio:
//!   […]}}}` plus, only when set: `custom`, `rtmpUrl`, `constraints`, `transport`,
//!   `cvoExtension`.
//! - `unPublishStream`: `{mediaSessionId, name, published: true, hasVideo: true, hasAudio:
//!   true, status: <current status>, record: false}`. `stream.stop()` sends it only once the
//!   status has left PENDING: while PENDING it retries every 200 ms, forever. The SDK closes
//!   its peer connection right after sending, without waiting for an answer.
//! - `playStream`: `{mediaSessionId, name, published: false, hasVideo: true, hasAudio: true,
//!   status: "PENDING", record: false, width, height, mediaProvider, sdp (a recvonly offer),
//!   bitrate, minBitrate, maxBitrate, quality}` plus optional `custom`, `constraints`,
//!   `transport`, `cvoExtension`. `stopStream` is shaped like `unPublishStream` with
//!   `published: false`.
//! - `availableStream`: `{mediaSessionId, name}` (the page's "Available" button).
//! - `ping` with `data: [null]` every `pingInterval` ms, only if the page set one (default 0:
//!   never; Two Way Streaming never does). `pong` with `data: [null]` answers a server
//!   `ping` at once.
//!
//! Server → client, and what the SDK does with each:
//! - `getUserData` `[OBJ]`: the only thing that moves the session to ESTABLISHED (the
//!   WebSocket opening only gives CONNECTED, and `createStream` throws unless ESTABLISHED).
//!   The SDK keeps `OBJ.authToken`, replaces its copy of the connection object with `OBJ`,
//!   and reads `OBJ.webRTCMetricsServerDescription` (left out: it would start a stats
//!   collector). Echoing the connection object plus an `authToken` is enough. Nothing
//!   else is awaited: the SDK has no `getVersion` or `notifyConnectionStatusEvent`.
//! - `setRemoteSDP` `[mediaSessionId, sdp]`: two array elements, not an object. The stream
//!   with that id applies it as the remote description (type "answer", since its peer
//!   connection is in have-local-offer), after local tweaks (Opus fmtp, sdpHook, bitrate
//!   b= lines). It does not change the stream's status. An unknown id is cached and logged.
//! - `notifyStreamStatusEvent` `[OBJ]`: routed by `OBJ.mediaSessionId` to the Stream the
//!   client created; `OBJ.status` becomes the stream's status (it must always be present: a
//!   missing one sets the status to `undefined`) and fires the page callback of that name;
//!   a non-empty `OBJ.info` becomes `stream.getInfo()` (the page maps "Stream name is
//!   already in use" to its own text, any other info to `"Other: <info>"`). FAILED, STOPPED
//!   and UNPUBLISHED end the stream on the SDK side (handlers removed, peer connection
//!   closed); later messages for that id are ignored. `name`, `published`, `hasVideo`,
//!   `hasAudio` are not read by the SDK but are part of the stream object Flashphoner sends;
//!   we send them.
//! - `availableStream` `[{id: mediaSessionId, status: "true"|"false", info}]`: answers
//!   `availableStream`. The SDK compares `status == "true"` in JavaScript, so the value must
//!   be the *string* "true" (a JSON `true` reads as unavailable). `info` is the reason.
//! - `fail` `[{apiMethod, info, …}]`: fires the session's WARN callback. With `apiMethod:
//!   "StreamStatusEvent"` it is also routed by `id` to a stream as a status update (then it
//!   needs `status` too); we use `notifyStreamStatusEvent` for stream failures instead.
//! - `ping`: the SDK answers `pong` immediately.
//!
//! Keep-alive. By default (`pingInterval` 0, `receiveProbes` 0) the SDK neither sends pings
//! nor checks for them; the Two Way Streaming page uses the defaults, so it has no keep-alive
//! requirement. A page that sets `receiveProbes: N, probesInterval: T` (the Stream Auto
//! Restore demo: 10 × 5000 ms) counts one miss every T ms, resets the count on **any** text
//! message from the server (after dispatch), and at N misses declares the session FAILED and
//! closes the socket. WebSocket-level Ping/Pong frames are invisible to the page and do not
//! count. So the server sends a JSON [`ping`] periodically (every 5 s keeps any N ≥ 3 with
//! T ≥ 5 s alive) and may treat missing `pong`s as a dead client. A client `ping` is answered
//! with [`pong`] (the SDK logs it as unknown, harmlessly).
//!
//! Sequence for the Two Way Streaming page (URL `ws://HOST:8080`, any path):
//! 1. C `connection` → S `getUserData` ⇒ "ESTABLISHED".
//! 2. Publish: C `publishStream` → S `setRemoteSDP [id, answer]`, then, once ICE and DTLS are
//!    up, S `notifyStreamStatusEvent {status: "PUBLISHING"}` ⇒ "PUBLISHING" (Stop enabled).
//!    The server must always leave PENDING (PUBLISHING or FAILED, e.g. on an ICE/DTLS
//!    timeout): a page that clicks Stop while PENDING never sends `unPublishStream`.
//! 3. Stop: C `unPublishStream` → S `notifyStreamStatusEvent {status: "UNPUBLISHED"}` ⇒
//!    "UNPUBLISHED".
//! 4. Failure at any point after `publishStream`: S `notifyStreamStatusEvent {status:
//!    "FAILED", info}` ⇒ "FAILED". The SDK also marks every live stream FAILED by itself when
//!    the WebSocket errors or closes (the server then tears the session's streams down, no
//!    message possible), and when camera access fails (nothing reaches the server).
//! 5. Disconnect: the page closes the WebSocket ⇒ "DISCONNECTED".

use serde_json::{json, Map, Value};

use super::sdp::SdpError;

/// Largest signaling message accepted (a Chrome offer is 5–20 KB).
pub const MAX_SIGNAL_MESSAGE: usize = 128 * 1024;
/// Longest stream name accepted, in bytes.
pub const MAX_STREAM_NAME: usize = 256;
/// Longest mediaSessionId accepted, in bytes (the SDK's UUIDs are 36).
pub const MAX_MEDIA_SESSION_ID: usize = 128;

/// Stream statuses (SDK `constants.STREAM_STATUS`).
pub const STATUS_PENDING: &str = "PENDING";
pub const STATUS_PUBLISHING: &str = "PUBLISHING";
pub const STATUS_PLAYING: &str = "PLAYING";
pub const STATUS_UNPUBLISHED: &str = "UNPUBLISHED";
pub const STATUS_STOPPED: &str = "STOPPED";
pub const STATUS_FAILED: &str = "FAILED";

/// Status `info` strings (SDK `constants.STREAM_STATUS_INFO`), spelled exactly as the SDK
/// compares them.
pub const INFO_STREAM_NAME_IN_USE: &str = "Stream name is already in use";
pub const INFO_STREAM_NOT_FOUND: &str = "Stream not found";
pub const INFO_NO_COMMON_CODECS: &str = "No common codecs";
pub const INFO_FAILED_BY_ICE_ERROR: &str = "Failed by ICE error";
pub const INFO_FAILED_BY_ICE_TIMEOUT: &str = "Failed by ICE timeout";
pub const INFO_FAILED_BY_DTLS_ERROR: &str = "Failed by DTLS error";
pub const INFO_FAILED_BY_DTLS_FINGERPRINT_ERROR: &str = "Failed by DTLS fingerprint error";
pub const INFO_FAILED_BY_RTP_ACTIVITY: &str = "Failed by RTP activity";
pub const INFO_FAILED_BY_RTMP_WRITER_ERROR: &str = "Failed by RTMP writer error";
pub const INFO_STOPPED_BY_PUBLISHER_STOP: &str = "Stopped by publisher stop";
pub const INFO_STOPPED_BY_SESSION_DISCONNECT: &str = "Stopped by session disconnect";
pub const INFO_FAILED_BY_ERROR: &str = "Failed by error";
pub const INFO_TRANSCODING_REQUIRED: &str = "Transcoding required, but disabled";
pub const INFO_NO_AVAILABLE_TRANSCODERS: &str = "No available transcoders";
pub const INFO_STOPPED_BY_USER: &str = "Stopped by user";

/// Why a WebRTC publish could not start, or why it ended: the session core's verdict
/// (`relay::webrtc::RtcSession`), told to the client in the words of the path it came by.
/// Flashphoner clients get [`RtcError::info`] in a `notifyStreamStatusEvent` (FAILED, or
/// UNPUBLISHED when [`RtcError::is_failure`] is false); WHIP clients get
/// [`RtcError::http_status`] for a refused offer (later failures have no WHIP message:
/// the resource just ends). It lives here, below the relay, because it is this
/// vocabulary the two signaling paths share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcError {
    /// The offer does not parse, or lacks what WebRTC needs (ICE credentials, fingerprint).
    BadOffer(SdpError),
    /// Nothing offered can be carried to RTMP.
    NoCommonCodecs,
    /// The AAC encoder for the stream's Opus audio could not be set up.
    AudioEncoder,
    /// No ICE nomination within the connect timeout (RFC 8445 §2.5: we are lite and wait).
    IceTimeout,
    /// ICE consent lost: no check from the selected address for 30 s (RFC 7675 §5.1).
    IceConsentLost,
    /// The DTLS handshake failed or did not finish in time, or its keys were unusable.
    DtlsFailed,
    /// The peer's certificate does not hash to the offer's fingerprint (RFC 8122 §5).
    DtlsFingerprint,
    /// No RTP for the inactivity limit after DTLS came up.
    RtpInactivity,
    /// The peer closed DTLS (close_notify): it stopped publishing. Not a failure.
    PeerClosed,
    /// Playback: the stream needs transcoding for this viewer (H.264 with B-frames, or
    /// a profile the viewer did not offer) and `--transcode` does not allow it.
    TranscodeRequired,
    /// Playback: no transcoder slot is free (`--transcode` limit per core).
    NoTranscoder,
    /// Playback: the stream's publisher stopped. Not a failure.
    PublisherStopped,
    /// Playback: the viewer could not keep up and was dropped.
    Evicted,
    /// Playback: nobody publishes the stream (and the server does not wait).
    StreamNotFound,
}

impl RtcError {
    /// The status `info` a Flashphoner client gets (SDK `STREAM_STATUS_INFO` spellings).
    pub fn info(&self) -> std::borrow::Cow<'static, str> {
        let s = match self {
            RtcError::BadOffer(e) => return format!("Bad SDP offer: {e}").into(),
            RtcError::NoCommonCodecs => INFO_NO_COMMON_CODECS,
            RtcError::AudioEncoder => INFO_FAILED_BY_ERROR,
            RtcError::IceTimeout | RtcError::IceConsentLost => INFO_FAILED_BY_ICE_TIMEOUT,
            RtcError::DtlsFailed => INFO_FAILED_BY_DTLS_ERROR,
            RtcError::DtlsFingerprint => INFO_FAILED_BY_DTLS_FINGERPRINT_ERROR,
            RtcError::RtpInactivity => INFO_FAILED_BY_RTP_ACTIVITY,
            RtcError::PeerClosed | RtcError::PublisherStopped => INFO_STOPPED_BY_PUBLISHER_STOP,
            RtcError::TranscodeRequired => INFO_TRANSCODING_REQUIRED,
            RtcError::NoTranscoder => INFO_NO_AVAILABLE_TRANSCODERS,
            RtcError::Evicted => INFO_FAILED_BY_ERROR,
            RtcError::StreamNotFound => INFO_STREAM_NOT_FOUND,
        };
        s.into()
    }

    /// FAILED (true) or UNPUBLISHED (false) for the stream status.
    pub fn is_failure(&self) -> bool {
        !matches!(self, RtcError::PeerClosed | RtcError::PublisherStopped)
    }

    /// Status code and reason phrase for a WHIP POST the session refused (RFC 9725 §4.2
    /// leaves the codes to HTTP: 406 when no codec fits, 400 for an unusable offer).
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            RtcError::NoCommonCodecs => (406, "Not Acceptable"),
            RtcError::AudioEncoder => (500, "Internal Server Error"),
            RtcError::TranscodeRequired | RtcError::NoTranscoder => (503, "Service Unavailable"),
            RtcError::StreamNotFound => (404, "Not Found"),
            _ => (400, "Bad Request"),
        }
    }
}

impl std::fmt::Display for RtcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.info())
    }
}

impl std::error::Error for RtcError {}

/// Why a client message was refused. The session answers with [`fail`] and goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalError {
    TooLarge,
    NotJson,
    NotAnObject,
    NoMessageName,
    /// `data` is missing, not an array, or its first element is not an object.
    NoPayload,
    /// A required field is absent (the field's name).
    MissingField(&'static str),
    /// A field has the wrong type, is empty, or is too long (the field's name).
    BadField(&'static str),
}

impl std::fmt::Display for SignalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignalError::TooLarge => write!(f, "signaling message larger than {MAX_SIGNAL_MESSAGE} bytes"),
            SignalError::NotJson => f.write_str("signaling message is not valid JSON"),
            SignalError::NotAnObject => f.write_str("signaling message is not a JSON object"),
            SignalError::NoMessageName => f.write_str("signaling message has no \"message\" string"),
            SignalError::NoPayload => f.write_str("signaling message has no object in \"data\"[0]"),
            SignalError::MissingField(name) => write!(f, "signaling message lacks required field {name}"),
            SignalError::BadField(name) => write!(f, "signaling message has an invalid field {name}"),
        }
    }
}

impl std::error::Error for SignalError {}

/// A `publishStream` request.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishReq {
    pub media_session_id: String,
    pub name: String,
    /// Absent → true (the SDK always sends them).
    pub has_video: bool,
    pub has_audio: bool,
    /// The SDP offer.
    pub sdp: String,
    /// Page-supplied object for authorization hooks; absent unless the page set it.
    pub custom: Option<Value>,
    /// Where to re-publish over RTMP, if the page asked.
    pub rtmp_url: Option<String>,
    /// The whole `data[0]` object, for everything not lifted out above.
    pub raw: Value,
}

/// One message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// The connection object (`appKey`, `mediaProviders`, `clientVersion`, …), echoed back by
    /// [`get_user_data`].
    Connection(Value),
    PublishStream(PublishReq),
    UnPublishStream {
        media_session_id: String,
        name: Option<String>,
    },
    /// `data[0]`, checked to hold a `mediaSessionId` and a `name`.
    PlayStream(Value),
    /// `data[0]`, checked to hold a `mediaSessionId`.
    StopStream(Value),
    AvailableStream {
        media_session_id: String,
        name: String,
    },
    Ping,
    Pong,
    /// Anything else: the name and the whole `data` value (Null if absent).
    Other {
        name: String,
        data: Value,
    },
}

/// Parse one text frame from the client.
pub fn parse_client_msg(text: &str) -> Result<ClientMsg, SignalError> {
    if text.len() > MAX_SIGNAL_MESSAGE {
        return Err(SignalError::TooLarge);
    }
    let root: Value = serde_json::from_str(text).map_err(|_| SignalError::NotJson)?;
    let Value::Object(mut root) = root else { return Err(SignalError::NotAnObject) };
    let Some(Value::String(name)) = root.remove("message") else { return Err(SignalError::NoMessageName) };
    let data = root.remove("data").unwrap_or(Value::Null);
    match name.as_str() {
        "ping" => Ok(ClientMsg::Ping),
        "pong" => Ok(ClientMsg::Pong),
        "connection" => Ok(ClientMsg::Connection(Value::Object(first_object(data)?))),
        "publishStream" => {
            let obj = first_object(data)?;
            let media_session_id = media_session_id(&obj)?;
            let name = stream_name(&obj)?;
            let sdp = match obj.get("sdp") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                None | Some(Value::String(_) | Value::Null) => return Err(SignalError::MissingField("sdp")),
                Some(_) => return Err(SignalError::BadField("sdp")),
            };
            let has_video = opt_bool(&obj, "hasVideo")?.unwrap_or(true);
            let has_audio = opt_bool(&obj, "hasAudio")?.unwrap_or(true);
            let custom = obj.get("custom").filter(|v| !v.is_null()).cloned();
            let rtmp_url = match obj.get("rtmpUrl") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(SignalError::BadField("rtmpUrl")),
            };
            Ok(ClientMsg::PublishStream(PublishReq {
                media_session_id,
                name,
                has_video,
                has_audio,
                sdp,
                custom,
                rtmp_url,
                raw: Value::Object(obj),
            }))
        }
        "unPublishStream" => {
            let obj = first_object(data)?;
            let media_session_id = media_session_id(&obj)?;
            let name = match obj.get("name") {
                None | Some(Value::Null) => None,
                Some(_) => Some(stream_name(&obj)?),
            };
            Ok(ClientMsg::UnPublishStream { media_session_id, name })
        }
        "playStream" => {
            let obj = first_object(data)?;
            media_session_id(&obj)?;
            stream_name(&obj)?;
            Ok(ClientMsg::PlayStream(Value::Object(obj)))
        }
        "stopStream" => {
            let obj = first_object(data)?;
            media_session_id(&obj)?;
            Ok(ClientMsg::StopStream(Value::Object(obj)))
        }
        "availableStream" => {
            let obj = first_object(data)?;
            Ok(ClientMsg::AvailableStream { media_session_id: media_session_id(&obj)?, name: stream_name(&obj)? })
        }
        _ => Ok(ClientMsg::Other { name, data }),
    }
}

/// `data[0]` as an object.
fn first_object(data: Value) -> Result<Map<String, Value>, SignalError> {
    match data {
        Value::Array(items) => match items.into_iter().next() {
            Some(Value::Object(obj)) => Ok(obj),
            _ => Err(SignalError::NoPayload),
        },
        _ => Err(SignalError::NoPayload),
    }
}

fn bounded_string(obj: &Map<String, Value>, field: &'static str, max: usize) -> Result<String, SignalError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(SignalError::MissingField(field)),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max => Ok(s.clone()),
        Some(_) => Err(SignalError::BadField(field)),
    }
}

fn media_session_id(obj: &Map<String, Value>) -> Result<String, SignalError> {
    bounded_string(obj, "mediaSessionId", MAX_MEDIA_SESSION_ID)
}

fn stream_name(obj: &Map<String, Value>) -> Result<String, SignalError> {
    bounded_string(obj, "name", MAX_STREAM_NAME)
}

fn opt_bool(obj: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, SignalError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(SignalError::BadField(field)),
    }
}

fn message(name: &str, data: Value) -> String {
    json!({ "message": name, "data": data }).to_string()
}

/// `getUserData`: the client's connection object echoed back with our `authToken`. This is
/// what makes the SDK's session ESTABLISHED. A non-object `connection` is replaced by `{}`.
pub fn get_user_data(connection: &Value, auth_token: &str) -> String {
    let mut obj = match connection {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    obj.insert("authToken".into(), Value::String(auth_token.into()));
    // Never ask the SDK to start its metrics collector.
    obj.remove("webRTCMetricsServerDescription");
    message("getUserData", json!([Value::Object(obj)]))
}

/// `setRemoteSDP`: `data` is `[mediaSessionId, sdp]`, two strings.
pub fn set_remote_sdp(media_session_id: &str, sdp: &str) -> String {
    message("setRemoteSDP", json!([media_session_id, sdp]))
}

/// What a stream carries, echoed in status events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMedia {
    /// true for a publisher, false for a player.
    pub published: bool,
    pub has_video: bool,
    pub has_audio: bool,
}

impl From<&PublishReq> for StreamMedia {
    fn from(req: &PublishReq) -> Self {
        StreamMedia { published: true, has_video: req.has_video, has_audio: req.has_audio }
    }
}

/// `notifyStreamStatusEvent`: the SDK routes it by `mediaSessionId` and takes `status` (one
/// of the `STATUS_*` constants) and `info` (one of the `INFO_*` constants, omitted if None).
pub fn stream_status(
    media_session_id: &str,
    name: &str,
    status: &str,
    info: Option<&str>,
    media: StreamMedia,
) -> String {
    let mut obj = Map::new();
    obj.insert("mediaSessionId".into(), media_session_id.into());
    obj.insert("name".into(), name.into());
    obj.insert("status".into(), status.into());
    if let Some(info) = info {
        obj.insert("info".into(), info.into());
    }
    obj.insert("published".into(), media.published.into());
    obj.insert("hasVideo".into(), media.has_video.into());
    obj.insert("hasAudio".into(), media.has_audio.into());
    obj.insert("record".into(), false.into());
    obj.insert("mediaProvider".into(), "WebRTC".into());
    message("notifyStreamStatusEvent", json!([Value::Object(obj)]))
}

/// `availableStream` answer: `{id, status: "true"|"false", info}`. The status is a string
/// because the SDK compares it with `== "true"`.
pub fn available_stream(media_session_id: &str, available: bool, info: Option<&str>) -> String {
    let mut obj = Map::new();
    obj.insert("id".into(), media_session_id.into());
    obj.insert("status".into(), if available { "true" } else { "false" }.into());
    if let Some(info) = info {
        obj.insert("info".into(), info.into());
    }
    message("availableStream", json!([Value::Object(obj)]))
}

/// `fail`: a session-level warning (the SDK fires its WARN callback), e.g. for a message we
/// could not parse. `api_method` names the request that failed.
pub fn fail(api_method: &str, info: &str) -> String {
    message("fail", json!([{ "apiMethod": api_method, "info": info }]))
}

/// `ping`: the SDK answers `pong`; any server message also resets its missing-ping counter.
pub fn ping() -> String {
    message("ping", json!([]))
}

/// `pong`, the answer to a client `ping`.
pub fn pong() -> String {
    message("pong", json!([]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const SDP_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
        a=rtpmap:102 H264/90000\r\n";

    /// `connection` exactly as `wsConnection.onopen` builds it in Chrome on plain http
    /// (undefined keepAlive/authToken/custom are dropped by JSON.stringify).
    fn sdk_connection() -> String {
        json!({
            "message": "connection",
            "data": [{
                "appKey": "defaultApp",
                "mediaProviders": ["WebRTC", "MSE", "WSPlayer"],
                "clientVersion": "2.0",
                "clientOSVersion": "5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "clientBrowserVersion": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "msePacketizationVersion": 2,
                "clientInfo": {}
            }]
        })
        .to_string()
    }

    /// `publishStream` exactly as `stream.publish()` builds it for Two Way Streaming
    /// (no constraints, custom, rtmpUrl, transport or cvoExtension: all undefined).
    fn sdk_publish() -> String {
        json!({
            "message": "publishStream",
            "data": [{
                "mediaSessionId": "2f1c0b40-9c2a-11ee-a4f0-c1a4e1e5b0a1",
                "name": "a1b2",
                "published": true,
                "hasVideo": true,
                "hasAudio": true,
                "status": "PENDING",
                "record": false,
                "mediaProvider": "WebRTC",
                "sdp": SDP_OFFER,
                "bitrate": 0,
                "minBitrate": 0,
                "maxBitrate": 0,
                "localMediaInfo": {
                    "devices": {
                        "video": [{"id": "cam0", "label": "fake_device_0", "type": "camera"}],
                        "audio": [{"id": "default", "label": "Fake%20Default%20Audio%20Input", "type": "mic"}]
                    },
                    "tracks": {
                        "video": [{"trackId": "6d0e7c3a", "device": "fake_device_0"}],
                        "audio": [{"trackId": "9a8b7c6d", "device": "Fake%20Default%20Audio%20Input"}]
                    }
                }
            }]
        })
        .to_string()
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn parses_sdk_connection() {
        let ClientMsg::Connection(obj) = parse_client_msg(&sdk_connection()).unwrap() else { panic!() };
        assert_eq!(obj["appKey"], "defaultApp");
        assert_eq!(obj["clientVersion"], "2.0");
        assert_eq!(obj["mediaProviders"][0], "WebRTC");
    }

    #[test]
    fn parses_sdk_publish_stream() {
        let ClientMsg::PublishStream(req) = parse_client_msg(&sdk_publish()).unwrap() else { panic!() };
        assert_eq!(req.media_session_id, "2f1c0b40-9c2a-11ee-a4f0-c1a4e1e5b0a1");
        assert_eq!(req.name, "a1b2");
        assert!(req.has_video && req.has_audio);
        assert_eq!(req.sdp, SDP_OFFER);
        assert_eq!(req.custom, None);
        assert_eq!(req.rtmp_url, None);
        assert_eq!(req.raw["localMediaInfo"]["tracks"]["video"][0]["device"], "fake_device_0");
        assert_eq!(StreamMedia::from(&req), StreamMedia { published: true, has_video: true, has_audio: true });

        // With the optional fields a page may set.
        let mut v = parse(&sdk_publish());
        v["data"][0]["custom"] = json!({"login": "bob", "token": 42});
        v["data"][0]["rtmpUrl"] = json!("rtmp://example.com/live");
        v["data"][0]["hasAudio"] = json!(false);
        v["data"][0]["constraints"] = json!({"audio": false, "video": true});
        let ClientMsg::PublishStream(req) = parse_client_msg(&v.to_string()).unwrap() else { panic!() };
        assert_eq!(req.custom, Some(json!({"login": "bob", "token": 42})));
        assert_eq!(req.rtmp_url.as_deref(), Some("rtmp://example.com/live"));
        assert!(!req.has_audio);

        // Tolerated: hasVideo/hasAudio missing (→ true).
        let mut v = parse(&sdk_publish());
        v["data"][0].as_object_mut().unwrap().retain(|k, _| ["mediaSessionId", "name", "sdp"].contains(&k.as_str()));
        let ClientMsg::PublishStream(req) = parse_client_msg(&v.to_string()).unwrap() else { panic!() };
        assert!(req.has_video && req.has_audio);
    }

    #[test]
    fn publish_stream_missing_required_fields() {
        for (field, want) in [
            ("mediaSessionId", SignalError::MissingField("mediaSessionId")),
            ("name", SignalError::MissingField("name")),
            ("sdp", SignalError::MissingField("sdp")),
        ] {
            let mut v = parse(&sdk_publish());
            v["data"][0].as_object_mut().unwrap().remove(field);
            assert_eq!(parse_client_msg(&v.to_string()), Err(want));
        }
        let mut v = parse(&sdk_publish());
        v["data"][0]["name"] = json!("");
        assert_eq!(parse_client_msg(&v.to_string()), Err(SignalError::BadField("name")));
        v["data"][0]["name"] = json!("x".repeat(MAX_STREAM_NAME + 1));
        assert_eq!(parse_client_msg(&v.to_string()), Err(SignalError::BadField("name")));
        v["data"][0]["name"] = json!(7);
        assert_eq!(parse_client_msg(&v.to_string()), Err(SignalError::BadField("name")));
        let mut v = parse(&sdk_publish());
        v["data"][0]["hasVideo"] = json!("yes");
        assert_eq!(parse_client_msg(&v.to_string()), Err(SignalError::BadField("hasVideo")));
        let mut v = parse(&sdk_publish());
        v["data"] = json!([]);
        assert_eq!(parse_client_msg(&v.to_string()), Err(SignalError::NoPayload));
        assert_eq!(SignalError::MissingField("sdp").to_string(), "signaling message lacks required field sdp");
    }

    #[test]
    fn parses_other_sdk_messages() {
        // stream.stop() after PUBLISHING.
        let unpub = r#"{"message":"unPublishStream","data":[{"mediaSessionId":"id1","name":"s1","published":true,"hasVideo":true,"hasAudio":true,"status":"PUBLISHING","record":false}]}"#;
        assert_eq!(
            parse_client_msg(unpub),
            Ok(ClientMsg::UnPublishStream { media_session_id: "id1".into(), name: Some("s1".into()) })
        );
        let stop = r#"{"message":"stopStream","data":[{"mediaSessionId":"id2","name":"s1","published":false,"hasVideo":true,"hasAudio":true,"status":"PLAYING","record":false}]}"#;
        assert!(matches!(parse_client_msg(stop), Ok(ClientMsg::StopStream(v)) if v["mediaSessionId"] == "id2"));
        let play = json!({"message": "playStream", "data": [{
            "mediaSessionId": "id3", "name": "s1", "published": false, "hasVideo": true, "hasAudio": true,
            "status": "PENDING", "record": false, "width": 0, "height": 0, "mediaProvider": "WebRTC",
            "sdp": SDP_OFFER, "bitrate": 0, "minBitrate": 0, "maxBitrate": 0, "quality": 0}]});
        assert!(matches!(parse_client_msg(&play.to_string()), Ok(ClientMsg::PlayStream(v)) if v["sdp"] == SDP_OFFER));
        let avail = r#"{"message":"availableStream","data":[{"mediaSessionId":"id4","name":"s1"}]}"#;
        assert_eq!(
            parse_client_msg(avail),
            Ok(ClientMsg::AvailableStream { media_session_id: "id4".into(), name: "s1".into() })
        );
        // send("ping", null) / send("pong", null) → data: [null].
        assert_eq!(parse_client_msg(r#"{"message":"ping","data":[null]}"#), Ok(ClientMsg::Ping));
        assert_eq!(parse_client_msg(r#"{"message":"pong","data":[null]}"#), Ok(ClientMsg::Pong));
        assert_eq!(parse_client_msg(r#"{"message":"pong"}"#), Ok(ClientMsg::Pong));
        let ev = r#"{"message":"sendStreamEvent","data":[{"mediaSessionId":"id1","type":"audioMuted"}]}"#;
        assert!(
            matches!(parse_client_msg(ev), Ok(ClientMsg::Other { name, data }) if name == "sendStreamEvent" && data[0]["type"] == "audioMuted")
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_client_msg("not json"), Err(SignalError::NotJson));
        assert_eq!(parse_client_msg("[1,2]"), Err(SignalError::NotAnObject));
        assert_eq!(parse_client_msg(r#"{"data":[]}"#), Err(SignalError::NoMessageName));
        assert_eq!(parse_client_msg(r#"{"message":5}"#), Err(SignalError::NoMessageName));
        assert_eq!(parse_client_msg(r#"{"message":"connection","data":{}}"#), Err(SignalError::NoPayload));
        assert_eq!(parse_client_msg(r#"{"message":"connection","data":[null]}"#), Err(SignalError::NoPayload));
        let big = format!(r#"{{"message":"x","data":["{}"]}}"#, "a".repeat(MAX_SIGNAL_MESSAGE));
        assert_eq!(parse_client_msg(&big), Err(SignalError::TooLarge));
        // Deep nesting is refused by serde_json's recursion limit, not a stack overflow.
        let deep = format!(r#"{{"message":"x","data":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse_client_msg(&deep), Err(SignalError::NotJson));
    }

    #[test]
    fn builders_have_the_shape_the_sdk_reads() {
        // getUserData: echo + authToken; data is an array holding one object.
        let ClientMsg::Connection(conn) = parse_client_msg(&sdk_connection()).unwrap() else { panic!() };
        let v = parse(&get_user_data(&conn, "tok-123"));
        assert_eq!(v["message"], "getUserData");
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["authToken"], "tok-123");
        assert_eq!(v["data"][0]["appKey"], "defaultApp");
        assert_eq!(v["data"][0]["mediaProviders"], conn["mediaProviders"]);
        assert!(v["data"][0].get("webRTCMetricsServerDescription").is_none());
        let v = parse(&get_user_data(&Value::Null, "t"));
        assert_eq!(v["data"][0], json!({"authToken": "t"}));

        // setRemoteSDP: data[0] is the id, data[1] the SDP, CRLFs intact.
        let v = parse(&set_remote_sdp("id1", SDP_OFFER));
        assert_eq!(v, json!({"message": "setRemoteSDP", "data": ["id1", SDP_OFFER]}));

        // notifyStreamStatusEvent.
        let media = StreamMedia { published: true, has_video: true, has_audio: false };
        let v = parse(&stream_status("id1", "s1", STATUS_PUBLISHING, None, media));
        assert_eq!(v["message"], "notifyStreamStatusEvent");
        let o = &v["data"][0];
        assert_eq!(o["mediaSessionId"], "id1");
        assert_eq!(o["name"], "s1");
        assert_eq!(o["status"], "PUBLISHING");
        assert!(o.get("info").is_none());
        assert_eq!(
            (o["published"].as_bool(), o["hasVideo"].as_bool(), o["hasAudio"].as_bool()),
            (Some(true), Some(true), Some(false))
        );
        let v = parse(&stream_status("id1", "s1", STATUS_FAILED, Some(INFO_STREAM_NAME_IN_USE), media));
        assert_eq!(v["data"][0]["status"], "FAILED");
        assert_eq!(v["data"][0]["info"], "Stream name is already in use");

        // availableStream: id + string status.
        let v = parse(&available_stream("id4", true, None));
        assert_eq!(v, json!({"message": "availableStream", "data": [{"id": "id4", "status": "true"}]}));
        let v = parse(&available_stream("id4", false, Some(INFO_STREAM_NOT_FOUND)));
        assert_eq!(v["data"][0]["status"], "false");
        assert_eq!(v["data"][0]["info"], "Stream not found");

        let v = parse(&fail("publishStream", "bad"));
        assert_eq!(v, json!({"message": "fail", "data": [{"apiMethod": "publishStream", "info": "bad"}]}));

        // ping/pong: data is an array so `data.data[0]` is defined behaviour in the SDK.
        assert_eq!(parse(&ping()), json!({"message": "ping", "data": []}));
        assert_eq!(parse(&pong()), json!({"message": "pong", "data": []}));
        // And our own parser reads our ping/pong.
        assert_eq!(parse_client_msg(&ping()), Ok(ClientMsg::Ping));
        assert_eq!(parse_client_msg(&pong()), Ok(ClientMsg::Pong));
    }

    #[test]
    fn escaping_in_builders() {
        let name = "we\"ird\\ name\u{0001}é";
        let v = parse(&stream_status(
            "i",
            name,
            STATUS_UNPUBLISHED,
            Some("x\ny"),
            StreamMedia { published: true, has_video: true, has_audio: true },
        ));
        assert_eq!(v["data"][0]["name"], name);
        assert_eq!(v["data"][0]["info"], "x\ny");
    }

    #[test]
    fn every_prefix_and_random_never_panic() {
        let samples = [sdk_connection(), sdk_publish(), r#"{"message":"ping","data":[null]}"#.to_string()];
        for s in &samples {
            for i in 0..=s.len() {
                if let Some(p) = s.get(..i) {
                    let _ = parse_client_msg(p);
                }
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let alphabet = br#"{}[]":,0123456789.-+eEtrufalsn \\/messagedataconnectionpublishStreammediaSessionIdsdp"#;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 80) as usize;
            let mut s = seed;
            let text: String = (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    alphabet[(s >> 33) as usize % alphabet.len()] as char
                })
                .collect();
            let _ = parse_client_msg(&text);
        }
    }

    #[test]
    fn rtc_errors_speak_flashphoner_and_http() {
        // The SDK compares these spellings (constants.STREAM_STATUS_INFO).
        assert_eq!(RtcError::IceTimeout.info(), "Failed by ICE timeout");
        assert_eq!(RtcError::IceConsentLost.info(), "Failed by ICE timeout");
        assert_eq!(RtcError::DtlsFailed.info(), "Failed by DTLS error");
        assert_eq!(RtcError::DtlsFingerprint.info(), "Failed by DTLS fingerprint error");
        assert_eq!(RtcError::RtpInactivity.info(), "Failed by RTP activity");
        assert_eq!(RtcError::NoCommonCodecs.info(), "No common codecs");
        assert_eq!(RtcError::PeerClosed.info(), "Stopped by publisher stop");
        assert_eq!(RtcError::BadOffer(SdpError::NotSdp).info(), "Bad SDP offer: SDP does not start with v=0");
        assert!(RtcError::RtpInactivity.is_failure() && !RtcError::PeerClosed.is_failure());
        assert_eq!(RtcError::NoCommonCodecs.http_status(), (406, "Not Acceptable"));
        assert_eq!(RtcError::BadOffer(SdpError::NotBundled).http_status(), (400, "Bad Request"));
    }
}
