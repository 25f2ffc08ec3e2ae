//! Flash-style clients: rtmpdump with extra connect arguments, and hand-built
//! AMF3-typed command messages (type 20 with objectEncoding 3, type 17).
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn rtmpdump_with_flash_connect_fields_plays() {
    let server = Server::start(&[]);
    let name = "flashy";
    let url = server.rtmp_url(name);
    let mut publisher = Publisher::ffmpeg(&url, 1500);
    server.wait_stream_live(name, Duration::from_secs(15));

    let flv = scratch_path("rtmpdump", "flv");
    let err = scratch_path("rtmpdump", "err");
    let mut cmd = Command::new(tool("rtmpdump"));
    cmd.args(["-r", &url, "-v", "-R", "-m", "10"])
        .args([
            "-C",
            "O:1",
            "-C",
            "NS:login:user",
            "-C",
            "NS:appKey:flashStreamingApp",
            "-C",
            "O:0",
        ])
        .args(["-B", "5", "-o"])
        .arg(&flv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()));
    let mut dump = ChildGuard::new("rtmpdump", cmd.spawn().expect("start rtmpdump"));
    // It is a player of the stream while it runs.
    wait_for(
        Duration::from_secs(5),
        "rtmpdump to show up as a player in /api/streams",
        || {
            server
                .stream(name)
                .and_then(|s| s.get("players").and_then(|p| p.as_u64()))
                .unwrap_or(0)
                >= 1
        },
    );
    // -B (stop) is measured in stream time, which a live relay need not start
    // at 0: stop rtmpdump after ~5.5 s of wall clock (SIGINT makes it close the
    // FLV cleanly) unless it stopped by itself.
    let st = wait_child(&mut dump.child, Duration::from_millis(5500))
        .or_else(|| end_child(&mut dump.child, "INT", Duration::from_secs(3)));
    let dump_log = read_file_lossy(&err);
    assert!(st.is_some(), "rtmpdump did not stop: {dump_log}");
    let size = std::fs::metadata(&flv).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 100_000,
        "rtmpdump wrote only {size} bytes; its log:\n{dump_log}"
    );

    let out = Command::new(tool("ffmpeg"))
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(&flv)
        .args(["-map", "0", "-f", "framemd5", "-"])
        .output()
        .expect("run ffmpeg on the FLV");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ffmpeg failed on rtmpdump's FLV: {errors}"
    );
    assert!(
        errors.trim().is_empty(),
        "decode errors in rtmpdump's FLV:\n{errors}"
    );
    let parsed = FrameMd5::parse(&String::from_utf8_lossy(&out.stdout));
    let v = parsed.by_type("video").map(|s| s.frames.len()).unwrap_or(0);
    let a = parsed.by_type("audio").map(|s| s.frames.len()).unwrap_or(0);
    // ~5 s were recorded; ask for at least half of it.
    assert!(
        v >= min_video_frames(5.0, 0.5),
        "only {v} video frames in rtmpdump's FLV; log:\n{dump_log}"
    );
    assert!(
        a >= min_audio_frames(5.0, 0.5),
        "only {a} audio frames in rtmpdump's FLV; log:\n{dump_log}"
    );
    assert!(
        publisher.is_running(),
        "publisher died: {}",
        publisher.log()
    );
}

#[test]
fn amf3_typed_commands_connect_and_create_stream() {
    let server = Server::start(&[]);
    let c = RtmpClient::connect(server.rtmp_port);

    // connect as a type-20 message whose command object asks for AMF3.
    let obj = c.connect_object("live", &[("objectEncoding", Amf::Number(3.0))]);
    c.send_command(0, false, &[Amf::str("connect"), Amf::Number(1.0), obj]);
    let args = c.wait_result(1.0, Duration::from_secs(5), "connect with objectEncoding 3");
    let info = args
        .iter()
        .find(|a| a.get("code").is_some())
        .unwrap_or_else(|| panic!("connect _result has no info object: {args:?}"));
    assert_eq!(
        info.get("code").and_then(Amf::as_str),
        Some("NetConnection.Connect.Success"),
        "connect _result info: {info:?}"
    );
    assert_eq!(
        info.get("objectEncoding").and_then(Amf::as_f64),
        Some(3.0),
        "connect _result info must echo objectEncoding 3: {info:?}"
    );

    // createStream as a type-17 (AMF3 command) message: 0x00 then AMF0 values.
    c.send_command(
        0,
        true,
        &[Amf::str("createStream"), Amf::Number(2.0), Amf::Null],
    );
    let args = c.wait_result(2.0, Duration::from_secs(5), "type-17 createStream");
    let id = args.iter().find_map(Amf::as_f64);
    assert!(
        matches!(id, Some(x) if x >= 1.0 && x.fract() == 0.0),
        "createStream _result carries no stream id number: {args:?}"
    );
    assert!(
        !c.closed(),
        "server closed the connection: {}",
        c.describe()
    );
}
