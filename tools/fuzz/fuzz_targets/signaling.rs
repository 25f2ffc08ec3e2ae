#![no_main]
//! Flashphoner signaling parser: arbitrary text must parse or fail cleanly, and every
//! answer we would build from a parsed request must be a well-formed signaling message.
use libfuzzer_sys::fuzz_target;
use rtcbridge::proto::signaling::{self, ClientMsg, SignalError, StreamMedia};

/// Our own replies are `{"message": NAME, "data": [...]}`: they parse, or are only too large.
fn well_formed(reply: &str) -> bool {
    matches!(signaling::parse_client_msg(reply), Ok(_) | Err(SignalError::TooLarge))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(msg) = signaling::parse_client_msg(text) else { return };
    let reply = match &msg {
        ClientMsg::Connection(conn) => signaling::get_user_data(conn, "token"),
        ClientMsg::PublishStream(req) => {
            let answer = signaling::set_remote_sdp(&req.media_session_id, &req.sdp);
            assert!(well_formed(&answer));
            signaling::stream_status(
                &req.media_session_id,
                &req.name,
                signaling::STATUS_PUBLISHING,
                None,
                StreamMedia::from(req),
            )
        }
        ClientMsg::UnPublishStream { media_session_id, name } => signaling::stream_status(
            media_session_id,
            name.as_deref().unwrap_or(""),
            signaling::STATUS_UNPUBLISHED,
            None,
            StreamMedia { published: true, has_video: true, has_audio: true },
        ),
        ClientMsg::AvailableStream { media_session_id, .. } => {
            signaling::available_stream(media_session_id, false, Some(signaling::INFO_STREAM_NOT_FOUND))
        }
        ClientMsg::Ping => signaling::pong(),
        _ => signaling::ping(),
    };
    assert!(well_formed(&reply));
});
