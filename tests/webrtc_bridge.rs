//! The product flow: a browser publishes over WebRTC, RTMP players play it with
//! H.264 video and AAC (or Enhanced RTMP Opus) audio, at once and in order.
//! Runs inside a loopback-only network namespace with headless Chromium.

mod common;

use std::time::{Duration, Instant};

use common::browser::{first_at, run_browser};
use common::{netns, Amf, Event, RtmpClient, Server};

const MSG_AUDIO: u8 = 8;
const MSG_VIDEO: u8 = 9;

fn is_aac_seq(r: &common::Rec) -> bool {
    matches!(&r.event, Event::Media { type_id: MSG_AUDIO, head, len, .. } if *len >= 2 && head[0] == 0xaf && head[1] == 0)
}

#[test]
fn rtmp_player_first_then_flashphoner_sdk_publishes() {
    if netns::reexec("rtmp_player_first_then_flashphoner_sdk_publishes") {
        return;
    }
    let server = Server::start(&["--unpublish-grace", "1"]);
    let mut player = RtmpClient::connect(server.rtmp_port);
    player.start_play("seed");
    let (i_start, _) = player.wait_status(0, "NetStream.Play.Start", Duration::from_secs(5));
    let (evs, raw) = run_browser(&server, "sdk", "seed", 6, |_| {});
    assert!(first_at(&evs, "#publishStatus", "PUBLISHING").is_some(), "SDK page never PUBLISHING\n{raw}\n{}", server.log());
    let (i_notify, _) = player.wait_status(i_start, "NetStream.Play.PublishNotify", Duration::from_secs(5));
    let (i_avc, _) = player
        .wait_event(i_notify, Duration::from_secs(5), |r| r.video_kind() == Some((true, true)))
        .unwrap_or_else(|| panic!("no AVC sequence header after PublishNotify: {}", player.describe()));
    let (i_aac, _) = player
        .wait_event(i_notify, Duration::from_secs(5), is_aac_seq)
        .unwrap_or_else(|| panic!("no AAC sequence header after PublishNotify: {}", player.describe()));
    let (i_key, _) = player
        .wait_event(i_avc, Duration::from_secs(5), |r| r.video_kind() == Some((true, false)))
        .unwrap_or_else(|| panic!("no keyframe after the sequence header: {}", player.describe()));
    let first_media = player
        .events()
        .iter()
        .enumerate()
        .skip(i_notify)
        .find(|(_, r)| matches!(&r.event, Event::Media { .. }))
        .map(|(i, _)| i)
        .unwrap_or(usize::MAX);
    assert!(first_media >= i_avc.min(i_aac), "media only after the sequence headers: {}", player.describe());
    assert!(i_key > i_avc, "video starts with a keyframe after the AVC header");
    let audio_frames = player.events().iter().skip(i_aac).filter(|r| r.is_media(MSG_AUDIO)).count();
    assert!(audio_frames > 50, "AAC frames flow: {audio_frames}");
    // The page stopped: after the grace window the player gets UnpublishNotify.
    player.wait_status(i_key, "NetStream.Play.UnpublishNotify", Duration::from_secs(6));
}

#[test]
fn ffmpeg_plays_browser_stream_with_h264_and_aac() {
    if netns::reexec("ffmpeg_plays_browser_stream_with_h264_and_aac") {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    let url = server.rtmp_url("bridge1");
    let http_port = server.http_port;
    let frames = move || -> u64 {
        common::http_get(http_port, "/api/streams")
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["streams"].as_array().and_then(|a| a.iter().find(|s| s["name"] == "bridge1")).map(|s| s["video"]["frames"].as_u64().unwrap_or(0)))
            .unwrap_or(0)
    };
    let mut play: Option<std::thread::JoinHandle<(u64, u64, common::PlayResult)>> = None;
    let (evs, raw) = run_browser(&server, "demo", "bridge1", 15, |evs| {
        if play.is_none() && first_at(evs, "#publishStatus", "PUBLISHING").is_some() {
            let url = url.clone();
            play = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                let before = frames();
                let p = common::FramePlayer::start("bridge", &url, 10.0);
                std::thread::sleep(Duration::from_secs(10));
                let after = frames();
                (before, after, p.finish(Duration::from_secs(20)))
            }));
        }
    });
    let (frames_before, frames_after, res) =
        play.unwrap_or_else(|| panic!("never PUBLISHING\n{raw}\n{}", server.log())).join().expect("player thread");
    let _ = evs;
    let v = res.video().unwrap_or_else(|| panic!("no video stream decoded: {res:?}"));
    let a = res.audio().unwrap_or_else(|| panic!("no audio stream decoded: {res:?}"));
    assert!(res.errors.is_empty(), "decode errors: {:?}", res.errors);
    let show = |l: &common::StreamLog, i: usize| format!("{:?}", &l.frames[i.saturating_sub(3)..(i + 3).min(l.frames.len())]);
    if let Some(i) = v.first_non_monotonic() {
        panic!("video timestamps not monotonic at {i}: {}", show(v, i));
    }
    if let Some(i) = a.first_non_monotonic() {
        panic!("audio timestamps not monotonic at {i}: {}", show(a, i));
    }
    // Frames the browser sent during the player's window, from the server's own count.
    let sent = frames_after.saturating_sub(frames_before) as f64;
    assert!(sent > 50.0, "the browser sent {sent} frames in 10 s");
    eprintln!("video decoded {} of ~{sent:.0} sent in the window; audio frames {}", res.video_count(), res.audio_count());
    assert!(res.video_count() as f64 >= 0.9 * sent, "video frames {} of ~{sent:.0} sent", res.video_count());
    let audio_secs = res.audio_count() as f64 * 1024.0 / 48000.0;
    assert!(audio_secs >= 9.5, "AAC covers {audio_secs:.2} s of 10 s");
}

#[test]
fn joining_players_get_a_keyframe_fast() {
    if netns::reexec("joining_players_get_a_keyframe_fast") {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    let mut lat = Vec::new();
    let mut done = false;
    let (_evs, raw) = run_browser(&server, "demo", "join1", 25, |evs| {
        if done || first_at(evs, "#publishStatus", "PUBLISHING").is_none() {
            return;
        }
        done = true;
        std::thread::sleep(Duration::from_millis(1500));
        for _ in 0..20 {
            // From the TCP connect: handshake, connect, createStream, play, first keyframe.
            let t = Instant::now();
            let mut p = RtmpClient::connect(server.rtmp_port);
            p.start_play("join1");
            let (_, r) = p
                .wait_event(0, Duration::from_secs(5), |r| r.video_kind() == Some((true, false)))
                .unwrap_or_else(|| panic!("no keyframe for a joining player: {}", p.describe()));
            lat.push(r.at.duration_since(t).as_secs_f64() * 1000.0);
            std::thread::sleep(Duration::from_millis(150));
        }
    });
    assert_eq!(lat.len(), 20, "20 joins measured\n{raw}\n{}", server.log());
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p95 = lat[18];
    eprintln!("join to first keyframe: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms", lat[10], p95, lat[19]);
    assert!(p95 <= 100.0, "p95 join-to-keyframe {p95:.1} ms > 100 ms: {lat:?}");
}

#[test]
fn enhanced_rtmp_opus_and_aac_players_at_once() {
    if netns::reexec("enhanced_rtmp_opus_and_aac_players_at_once") {
        return;
    }
    let server = Server::start(&["--audio", "opus"]);
    let mut opus = RtmpClient::connect(server.rtmp_port);
    let obj = opus.connect_object("live", &[("fourCcList", Amf::StrictArray(vec![Amf::str("Opus"), Amf::str("avc1")]))]);
    opus.send_command(0, false, &[Amf::str("connect"), Amf::Number(1.0), obj]);
    opus.wait_result(1.0, Duration::from_secs(5), "connect");
    let sid = opus.create_stream();
    opus.play(sid, "dual");
    let mut aac = RtmpClient::connect(server.rtmp_port);
    aac.start_play("dual");
    let (_evs, raw) = run_browser(&server, "demo", "dual", 5, |_| {});
    let audio_heads = |c: &RtmpClient| -> Vec<u8> {
        c.events()
            .iter()
            .filter_map(|r| match &r.event {
                Event::Media { type_id: MSG_AUDIO, head, .. } => Some(head[0]),
                _ => None,
            })
            .collect()
    };
    let o = audio_heads(&opus);
    let a = audio_heads(&aac);
    assert!(o.len() > 50 && a.len() > 50, "both got audio: opus {} aac {}\n{raw}", o.len(), a.len());
    assert!(o.iter().all(|b| b >> 4 == 9), "Opus player gets only Enhanced RTMP (SoundFormat 9) audio: {:x?}", &o[..8]);
    assert!(a.iter().all(|b| *b == 0xaf), "the other player gets only AAC: {:x?}", &a[..8]);
    for c in [&opus, &aac] {
        assert!(c.events().iter().any(|r| r.is_media(MSG_VIDEO)), "video for both");
    }
}
