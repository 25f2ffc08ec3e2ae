//! A player that arrives before its publisher waits for it; a publisher that
//! drops and returns within the grace window is invisible to the player; one
//! that stays away ends the play with UnpublishNotify after the grace window.
mod common;

use common::*;
use std::time::{Duration, Instant};

fn video_after(p: &RtmpClient, from: usize, after: Instant) -> usize {
    p.events()
        .iter()
        .skip(from)
        .filter(|e| e.is_media(MSG_VIDEO) && e.at > after)
        .count()
}

#[test]
fn play_before_publish_then_quick_reconnect_then_unpublish() {
    let server = Server::start(&["--unpublish-grace", "2"]);
    let name = "early";
    let url = server.rtmp_url(name);

    let mut player = RtmpClient::connect(server.rtmp_port);
    player.start_play(name);
    let (i_reset, _) = player.wait_status(0, "NetStream.Play.Reset", Duration::from_secs(5));
    let (i_start, _) = player.wait_status(0, "NetStream.Play.Start", Duration::from_secs(5));
    assert!(
        i_reset < i_start,
        "Play.Reset must come before Play.Start: {}",
        player.describe()
    );
    assert!(
        !player
            .events()
            .iter()
            .any(|e| e.status() == Some("NetStream.Play.StreamNotFound")),
        "default --unknown-stream is wait, got StreamNotFound: {}",
        player.describe()
    );

    // The publisher arrives: PublishNotify, then audio and video.
    let mut publisher = Publisher::ffmpeg(&url, 1000);
    let (i_pn, _) = player.wait_status(
        i_start + 1,
        "NetStream.Play.PublishNotify",
        Duration::from_secs(15),
    );
    assert!(
        !player.events()[..i_pn]
            .iter()
            .any(|e| matches!(e.event, Event::Media { .. })),
        "media before PublishNotify: {}",
        player.describe()
    );
    player
        .wait_event(i_pn, Duration::from_secs(10), |e| e.is_media(MSG_VIDEO))
        .unwrap_or_else(|| panic!("no video after PublishNotify: {}", player.describe()));
    player
        .wait_event(i_pn, Duration::from_secs(10), |e| e.is_media(MSG_AUDIO))
        .unwrap_or_else(|| panic!("no audio after PublishNotify: {}", player.describe()));
    let t = Instant::now();
    wait_for(
        Duration::from_secs(10),
        "1 s of video at the player",
        || video_after(&player, i_pn, t) >= 30,
    );

    // Publisher drops and comes back at once (well within the 2 s grace).
    let i_kill = player.len();
    let t_kill = Instant::now();
    publisher.kill();
    let mut publisher = Publisher::ffmpeg(&url, 1000);
    assert!(
        t_kill.elapsed() < Duration::from_secs(1),
        "restart took {:?}",
        t_kill.elapsed()
    );
    wait_for(
        Duration::from_secs(10),
        "video from the returning publisher (30 frames)",
        || video_after(&player, i_kill, t_kill + Duration::from_millis(200)) >= 30,
    );
    // Past the grace window counted from the drop: still no UnpublishNotify.
    let quiet_until = t_kill + Duration::from_secs(4);
    let unpublish = player.wait_event(
        i_kill,
        quiet_until.saturating_duration_since(Instant::now()),
        |e| e.status() == Some("NetStream.Play.UnpublishNotify"),
    );
    assert!(
        unpublish.is_none(),
        "UnpublishNotify although the publisher came back within the grace window: {}",
        player.describe()
    );
    assert!(
        !player.closed(),
        "player connection closed: {}",
        player.describe()
    );
    let t = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "media to keep flowing after the reconnect",
        || video_after(&player, i_kill, t) >= 15,
    );

    // Publisher gone for good: UnpublishNotify after ~2 s.
    let i_gone = player.len();
    let t_gone = Instant::now();
    publisher.kill();
    let (_, rec) = player.wait_status(
        i_gone,
        "NetStream.Play.UnpublishNotify",
        Duration::from_secs(8),
    );
    let after = rec.at.duration_since(t_gone);
    assert!(
        after >= Duration::from_millis(1500) && after <= Duration::from_secs(6),
        "UnpublishNotify {after:?} after the publisher left (grace 2 s: want 1.5..6 s)"
    );
    assert!(
        !player
            .events()
            .iter()
            .any(|e| e.status() == Some("NetStream.Play.StreamNotFound")),
        "unexpected StreamNotFound: {}",
        player.describe()
    );
}

#[test]
fn unknown_stream_not_found_mode() {
    let server = Server::start(&["--unknown-stream", "not-found"]);
    let mut player = RtmpClient::connect(server.rtmp_port);
    player.start_play("nosuchstream");
    let (i_nf, _) = player.wait_status(0, "NetStream.Play.StreamNotFound", Duration::from_secs(5));
    assert!(
        !player.events()[..i_nf]
            .iter()
            .any(|e| e.status() == Some("NetStream.Play.Start")),
        "Play.Start before StreamNotFound: {}",
        player.describe()
    );

    // A name that is live still plays in this mode.
    let name = "known";
    let _publisher = Publisher::ffmpeg(&server.rtmp_url(name), 800);
    server.wait_stream_live(name, Duration::from_secs(15));
    let mut ok = RtmpClient::connect(server.rtmp_port);
    ok.start_play(name);
    let (i_start, _) = ok.wait_status(0, "NetStream.Play.Start", Duration::from_secs(5));
    ok.wait_event(i_start, Duration::from_secs(5), |e| e.is_media(MSG_VIDEO))
        .unwrap_or_else(|| {
            panic!(
                "no video for a live name in not-found mode: {}",
                ok.describe()
            )
        });
    assert!(
        !ok.events()
            .iter()
            .any(|e| e.status() == Some("NetStream.Play.StreamNotFound")),
        "StreamNotFound for a live name: {}",
        ok.describe()
    );
}
