//! Headless Chromium publishes a fake camera and microphone to rtcbridge,
//! through our own demo page and through the Flashphoner Web SDK's unchanged
//! Two Way Streaming example page. Runs inside a loopback-only network namespace.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::{first_at, run_browser, run_browser_at, status_seq};
use common::{netns, signal, tool, Server};

#[test]
fn chromium_publishes_through_demo_page() {
    if netns::reexec("chromium_publishes_through_demo_page") {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    let (evs, raw) = run_browser(&server, "demo", "cam1", 3, |_| {});
    let seq = status_seq(&evs, "#publishStatus");
    assert!(seq.contains(&"PUBLISHING".to_string()), "never PUBLISHING: {seq:?}\n{raw}\n{}", server.log());
    let clicked = first_at(&evs, "action", "publish").expect("publish clicked");
    let publishing = first_at(&evs, "#publishStatus", "PUBLISHING").expect("PUBLISHING seen");
    assert!(publishing - clicked <= 5000, "PUBLISHING took {} ms after the click", publishing - clicked);
    eprintln!("PUBLISHING {} ms after clicking Publish", publishing - clicked);
    assert_eq!(seq.last().map(String::as_str), Some("UNPUBLISHED"), "stop gives UNPUBLISHED: {seq:?}");
}

#[test]
fn chromium_stream_has_h264_and_opus_in_api() {
    if netns::reexec("chromium_stream_has_h264_and_opus_in_api") {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    // Poll the API from a thread while the browser publishes (the driver blocks).
    let port = server.http_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let poller = std::thread::spawn(move || {
        let mut last = None;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((200, body)) = common::http_get(port, "/api/streams") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    if let Some(s) = v["streams"].as_array().and_then(|a| a.iter().find(|s| s["name"] == "cam2")) {
                        last = Some(s.clone());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        last
    });
    // While the browser publishes cam2: a second publish of cam2 (WebSocket and WHIP)
    // and an offer without H.264 are refused with the SDK's info strings, and cam2
    // keeps going.
    let mut refusals_checked = false;
    let (evs, raw) = run_browser(&server, "demo", "cam2", 11, |evs| {
        if refusals_checked || first_at(evs, "#publishStatus", "PUBLISHING").is_none() {
            return;
        }
        refusals_checked = true;
        let before = server.video_frames("cam2");
        let mut ws = signal::WsClient::connect(server.http_port);
        ws.send("connection", serde_json::json!({"appKey": "defaultApp", "mediaProviders": ["WebRTC"]}));
        ws.wait_for("getUserData", Duration::from_secs(5));
        ws.send("publishStream", serde_json::json!({"mediaSessionId": "dup-1", "name": "cam2", "hasVideo": true, "hasAudio": true, "sdp": signal::offer(true)}));
        let st = ws.wait_for("notifyStreamStatusEvent", Duration::from_secs(5));
        assert_eq!(st["data"][0]["status"], "FAILED", "{st}");
        assert_eq!(st["data"][0]["info"], "Stream name is already in use", "{st}");
        ws.send("publishStream", serde_json::json!({"mediaSessionId": "vp8-1", "name": "other", "hasVideo": true, "hasAudio": true, "sdp": signal::offer(false)}));
        let st = ws.wait_for("notifyStreamStatusEvent", Duration::from_secs(5));
        assert_eq!(st["data"][0]["status"], "FAILED", "{st}");
        assert_eq!(st["data"][0]["info"], "No common codecs", "{st}");
        let (code, body, _) = signal::whip_post(server.http_port, "cam2", &signal::offer(true));
        assert_eq!((code, body.trim()), (409, "Stream name is already in use"));
        let (code, body, _) = signal::whip_post(server.http_port, "other2", &signal::offer(false));
        assert_eq!((code, body.trim()), (406, "No common codecs"));
        common::wait_for(Duration::from_secs(5), "cam2 keeps receiving frames", || server.video_frames("cam2") > before + 30);
        assert!(server.stream("other").is_none() && server.stream("other2").is_none(), "refused names are not live");
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let best: Option<serde_json::Value> = poller.join().expect("poller");
    assert!(refusals_checked, "the refusal checks ran while cam2 was PUBLISHING");
    let seq = status_seq(&evs, "#publishStatus");
    assert!(!seq.contains(&"FAILED".to_string()), "the first stream was untouched: {seq:?}");
    let s = best.unwrap_or_else(|| panic!("stream cam2 never in /api/streams\n{raw}\n{}", server.log()));
    let _ = evs;
    assert_eq!(s["source"], "webrtc", "{s}");
    let v = &s["video"];
    assert_eq!(v["codec"], "H264", "{s}");
    assert!(v["width"].as_u64().unwrap_or(0) >= 320 && v["height"].as_u64().unwrap_or(0) >= 180, "real size: {s}");
    assert!(v["frames"].as_u64().unwrap_or(0) >= 100, "at least 100 video frames: {s}");
    assert!(v["keyframes"].as_u64().unwrap_or(0) >= 1, "a keyframe: {s}");
    let a = &s["audio"];
    assert_eq!(a["codec"], "opus", "{s}");
    assert!(a["frames"].as_u64().unwrap_or(0) >= 250, "at least 250 Opus frames: {s}");
    // Bridge numbers: keyframes requested (periodic PLI keeps the GOP young), A/V offset sane.
    assert!(s["webrtc"]["keyframe_requests"].as_u64().unwrap_or(0) >= 2, "keyframe requests: {s}");
    assert!(s["gop_age_ms"].as_u64().is_some_and(|g| g <= 4000), "GOP age within ~2 keyframe intervals: {s}");
    assert!(s["webrtc"]["av_offset_ms"].as_i64().is_some_and(|o| o.abs() < 500), "A/V offset: {s}");
    assert!(s["webrtc"]["av_sr_skew_ms"].as_i64().is_some_and(|o| o.abs() < 200), "SR skew: {s}");
    // Chromium's fake devices share one clock: no audio drift for the reports to correct.
    assert!(s["webrtc"]["av_sr_shift_ms"].as_i64().is_some_and(|o| o.abs() <= 5), "SR drift correction: {s}");
    // Opus → AAC transcode time: every Opus packet goes through it, each in well under 20 ms.
    let t = &s["webrtc"]["transcode"];
    let packets = t["packets"].as_u64().unwrap_or(0);
    assert!(packets >= 250 && packets <= a["frames"].as_u64().unwrap_or(0) + 50, "transcoded packets: {s}");
    assert!(t["us_per_packet"].as_f64().is_some_and(|us| us > 1.0 && us < 20_000.0), "transcode time per packet: {s}");
    // Chromium sends mono Opus unless the answer asks for stereo, and ours does not: mono AAC.
    assert_eq!(t["aac_channels"].as_u64(), Some(1), "AAC channels for Chromium's mono Opus: {s}");
    eprintln!("transcode: {t}");
}

#[test]
fn flashphoner_sdk_two_way_streaming_page_publishes() {
    if netns::reexec("flashphoner_sdk_two_way_streaming_page_publishes") {
        return;
    }
    let server = Server::start(&[]);
    let (evs, raw) = run_browser(&server, "sdk", "sdk1", 6, |_| {});
    let conn = status_seq(&evs, "#connectStatus");
    assert!(conn.contains(&"ESTABLISHED".to_string()), "SDK never ESTABLISHED: {conn:?}\n{raw}\n{}", server.log());
    let seq = status_seq(&evs, "#publishStatus");
    let i_pub = seq.iter().position(|s| s == "PUBLISHING").unwrap_or_else(|| panic!("never PUBLISHING: {seq:?}\n{raw}\n{}", server.log()));
    let i_unpub = seq.iter().position(|s| s == "UNPUBLISHED").unwrap_or_else(|| panic!("never UNPUBLISHED: {seq:?}\n{raw}"));
    assert!(i_pub < i_unpub, "PUBLISHING then UNPUBLISHED: {seq:?}");
}

#[test]
fn aiortc_publishes_over_whip() {
    if netns::reexec("aiortc_publishes_over_whip") {
        return;
    }
    let server = Server::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("py").join("whip_publish.py");
    let url = format!("http://127.0.0.1:{}/whip/whip1", server.http_port);
    let port = server.http_port;
    let poller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(25);
        let mut best: Option<serde_json::Value> = None;
        while Instant::now() < deadline {
            if let Ok((200, body)) = common::http_get(port, "/api/streams") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    match v["streams"].as_array().and_then(|a| a.iter().find(|s| s["name"] == "whip1")) {
                        Some(s) => best = Some(s.clone()),
                        None if best.is_some() => break, // published, then ended by DELETE
                        None => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        best
    });
    let out = Command::new(tool("python3")).arg(&script).arg(&url).arg("6").output().expect("run aiortc (pip install aiortc: tools/test-all)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "aiortc WHIP publish failed: {text}\n{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(text.contains("\"state\": \"connected\""), "{text}");
    let s = poller.join().expect("poller").unwrap_or_else(|| panic!("whip1 never in /api/streams\n{}", server.log()));
    assert_eq!(s["source"], "webrtc", "{s}");
    assert_eq!(s["video"]["codec"], "H264", "{s}");
    assert_eq!((s["video"]["width"].as_u64(), s["video"]["height"].as_u64()), (Some(640), Some(360)), "{s}");
    assert!(s["video"]["frames"].as_u64().unwrap_or(0) >= 60, "{s}");
    assert!(s["audio"]["frames"].as_u64().unwrap_or(0) >= 100, "{s}");
    common::wait_for(Duration::from_secs(5), "DELETE ends the stream", || server.stream("whip1").is_none());
}

#[test]
fn chromium_publishes_over_https_and_wss() {
    if netns::reexec("chromium_publishes_over_https_and_wss") {
        return;
    }
    let dir = common::scratch_dir();
    let (cert, key) = common::self_signed_pem(&dir);
    let https_port = common::free_port();
    let https = format!("127.0.0.1:{https_port}");
    let server = Server::start(&["--https", &https, "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    common::wait_for(Duration::from_secs(5), "https port open", || std::net::TcpStream::connect(("127.0.0.1", https_port)).is_ok());
    let (evs, raw) = run_browser_at(
        &format!("https://127.0.0.1:{https_port}"),
        &format!("wss://127.0.0.1:{https_port}/"),
        &["--ignore-cert"],
        "demo",
        "tls1",
        3,
        |_| {},
    );
    let conn = status_seq(&evs, "#connectStatus");
    assert!(conn.contains(&"ESTABLISHED".to_string()), "wss never ESTABLISHED: {conn:?}\n{raw}\n{}", server.log());
    let seq = status_seq(&evs, "#publishStatus");
    assert!(seq.contains(&"PUBLISHING".to_string()), "never PUBLISHING over wss: {seq:?}\n{raw}\n{}", server.log());
    assert!(server.log().contains("wss 127.0.0.1:"), "the signaling connection was TLS: {}", server.log());
}

#[test]
fn aiortc_g711_audio_passes_through_to_rtmp() {
    if netns::reexec("aiortc_g711_audio_passes_through_to_rtmp") {
        return;
    }
    let server = Server::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("py").join("whip_publish.py");
    let url = format!("http://127.0.0.1:{}/whip/g711", server.http_port);
    let mut publisher = Command::new(tool("python3"))
        .arg(&script)
        .arg(&url)
        .arg("8")
        .arg("PCMU")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run aiortc");
    common::wait_for(Duration::from_secs(15), "g711 stream live", || server.stream("g711").is_some_and(|s| s["audio"]["frames"].as_u64().unwrap_or(0) > 20));
    let s = server.stream("g711").expect("live");
    assert_eq!(s["audio"]["codec"], "pcmu", "{s}");
    let probe = Command::new(tool("ffprobe"))
        .args(["-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels", "-of", "compact", &server.rtmp_url("g711")])
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(text.contains("codec_name=pcm_mulaw") && text.contains("sample_rate=8000"), "G.711 µ-law passed through: {text}");
    assert!(text.contains("codec_name=h264"), "{text}");
    let status = publisher.wait().expect("aiortc exit");
    assert!(status.success(), "aiortc WHIP publish with PCMU failed\n{}", server.log());
}
