//! RTMP push (issue 11) through the HTTP API, black-box against the `rtcbridge` binary:
//! - an ffmpeg-published stream pushed at once to `ffmpeg -listen 1` (recording exactly
//!   what the push sent) and over `rtmps://` to a second rtcbridge whose self-signed
//!   certificate is trusted with `--push-ca`: both pushes "pushing" with bytes and frames
//!   growing, /metrics counting them, the recording H.264 + AAC with sequence headers,
//!   starting on a keyframe, timestamps increasing from ~0, decoding with zero errors,
//!   a player of the second rtcbridge decoding video and audio with zero errors,
//!   DELETE ending a push (the destination sees the end of the stream);
//! - bad requests (bad JSON, missing fields, unparsable URLs, unknown scheme, stream not
//!   live, duplicate) answered 400/404/409 with the reason, and destinations that fail
//!   (unresolvable host, `_error` on connect, closed during the handshake, refused port)
//!   shown as "retrying" with the reason and a growing reconnect count, passwords never
//!   shown, while a player of the stream keeps receiving frames throughout;
//! - the fake destinations those tests use behave as described with a real client (ffmpeg).
mod common;
#[path = "common/push.rs"]
mod push;

use common::*;
use push::*;
use serde_json::Value;
use std::thread;
use std::time::{Duration, Instant};

const NAME: &str = "pushsrc";
const PLAYER_WINDOW: f64 = 6.0;

/// A push id, what is expected, and the check of its `last_error`.
type ErrorCheck = Box<dyn Fn(&str) -> bool>;

#[test]
fn push_to_ffmpeg_listen_and_over_rtmps_to_a_second_rtcbridge() {
    // The second rtcbridge: the rtmps:// destination.
    let (cert, key) = tls_pair();
    let tls_port = free_port();
    let tls_addr = format!("127.0.0.1:{tls_port}");
    let dest_server = Server::start(&["--rtmps", &tls_addr, "--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    wait_listening(tls_port, Duration::from_secs(5), "the second rtcbridge's --rtmps");

    // Ours, trusting the destination's self-signed certificate.
    let server = Server::start(&["--push-ca", path_str(&cert)]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 1500);
    server.wait_stream_live(NAME, Duration::from_secs(15));

    let mut dest = ListenDest::start(free_port(), "x");
    let url1 = dest.url("x");
    let url2 = format!("rtmps://127.0.0.1:{tls_port}/live/key");
    let id1 = start_push(&server, NAME, &url1);
    let id2 = start_push(&server, NAME, &url2);
    assert_ne!(id1, id2, "two pushes, two ids");

    let up = |p: &Value| state(p) == "pushing" && num(p, "bytes") > 0 && num(p, "frames") > 0;
    let p1 = wait_push(&server, &id1, Duration::from_secs(10), "pushing to ffmpeg -listen with bytes and frames", up);
    let t_pushing1 = Instant::now();
    let p2 = wait_push(&server, &id2, Duration::from_secs(10), "pushing over rtmps to the second rtcbridge with bytes and frames", up);

    // GET /api/push lists both, as the contract describes them.
    let list = list_pushes(&server);
    for (id, url) in [(&id1, &url1), (&id2, &url2)] {
        let p = list
            .iter()
            .find(|p| p["id"].as_str() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("GET /api/push does not list {id}: {list:?}"));
        assert_eq!(p["stream"].as_str(), Some(NAME), "{p}");
        assert_eq!(p["url"].as_str(), Some(url.as_str()), "{p}");
        assert_eq!(p["rule"].as_bool(), Some(false), "a push started by the API is not a --push rule: {p}");
        for k in ["bytes", "frames", "drops", "reconnects"] {
            assert!(p[k].is_u64(), "{k} is a count: {p}");
        }
        assert!(p.get("last_error").is_some(), "last_error present (string or null): {p}");
    }

    // Bytes and frames keep growing.
    thread::sleep(Duration::from_secs(2));
    for (id, before) in [(&id1, &p1), (&id2, &p2)] {
        let now = get_push(&server, id);
        assert_eq!(state(&now), "pushing", "{now}");
        assert!(num(&now, "bytes") > num(before, "bytes"), "push {id}: bytes did not grow in 2 s: {before} then {now}");
        assert!(
            num(&now, "frames") >= num(before, "frames") + 45,
            "push {id}: frames grew by less than 45 in 2 s (30 fps video + audio): {before} then {now}"
        );
    }
    let m = server.metrics();
    assert_eq!(m.sum_where("rtcbridge_pushes", &[("state", "pushing")]), 2.0, "pushes by state:\n{}", m.text);
    assert!(m.sum("rtcbridge_push_bytes_total") > 0.0, "push bytes:\n{}", m.text);
    assert!(m.sum("rtcbridge_push_frames_total") > 0.0, "push frames:\n{}", m.text);

    // The second rtcbridge has the stream, published over rtmps, and plays it.
    dest_server.wait_stream_live("key", Duration::from_secs(10));
    dest_server.wait_log_line(Duration::from_secs(5), "the push publishing \"key\" over rtmps", |l| {
        l.contains("rtmps 127.0.0.1:") && l.contains("publishing \"key\"")
    });
    let player = FramePlayer::start("player of the second rtcbridge", &dest_server.rtmp_url("key"), PLAYER_WINDOW);
    let r = player.finish(Duration::from_secs(20));
    r.assert_healthy(min_video_frames(PLAYER_WINDOW, 0.9), min_audio_frames(PLAYER_WINDOW, 0.9), true);

    // DELETE ends the push to ffmpeg: it sees the end of the stream and finishes its file.
    let (status, v) = delete_push(&server, &id1);
    assert_eq!(status, 200, "DELETE /api/push/{id1}: {v}");
    assert_eq!(v["id"].as_str(), Some(id1.as_str()), "{v}");
    assert_eq!(v["state"].as_str(), Some("stopped"), "{v}");
    let pushed = t_pushing1.elapsed().as_secs_f64();
    let st = dest.wait_exit(Duration::from_secs(10));
    assert_eq!(state(&get_push(&server, &id1)), "stopped");
    eprintln!("ffmpeg -listen exited ({st}) after {pushed:.1} s of push");

    let rec = analyze(&dest.out, true);
    let label = "recording of the push by ffmpeg -listen";
    rec.assert_h264_aac(label);
    rec.assert_starts_on_keyframe(label);
    rec.assert_monotonic(label);
    rec.assert_decodes_clean(label, min_video_frames(pushed - 1.5, 0.9), min_audio_frames(pushed - 1.5, 0.9));
    let first = rec.first_dts().unwrap_or(f64::NAN);
    assert!(first.abs() < 0.5, "{label}: timestamps start at {first:.3} s, not at 0 (recorded with -copyts)");
    let complaints = timestamp_complaints(&dest.log());
    assert!(complaints.is_empty(), "ffmpeg -listen complained about timestamps: {complaints:?}");
    rec.assert_only_audio_video(label);

    let (status, v) = delete_push(&server, &id2);
    assert_eq!(status, 200, "DELETE /api/push/{id2}: {v}");
    assert_eq!(v["state"].as_str(), Some("stopped"), "{v}");
    let stopped = wait_push(&server, &id2, Duration::from_secs(2), "stopped", |p| state(p) == "stopped");
    assert_eq!(state(&stopped), "stopped");
    // Stopped pushes stay listed.
    let list = list_pushes(&server);
    for id in [&id1, &id2] {
        let p = list.iter().find(|p| p["id"].as_str() == Some(id.as_str()));
        assert!(matches!(p, Some(p) if state(p) == "stopped"), "stopped push {id} listed as stopped: {list:?}");
    }
    let m = server.metrics();
    assert_eq!(m.sum_where("rtcbridge_pushes", &[("state", "pushing")]), 0.0, "{}", m.text);
    assert_eq!(m.sum_where("rtcbridge_pushes", &[("state", "stopped")]), 2.0, "{}", m.text);

    // Unknown ids.
    let unknown = format!("P-{}", "0".repeat(32));
    assert_eq!(api(&server, "GET", &format!("/api/push/{unknown}"), None).0, 404);
    assert_eq!(delete_push(&server, &unknown).0, 404);

    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
}

/// POST /api/push with a raw body; must be 400 with an `error` string; returns it.
fn bad_request(server: &Server, body: &str) -> String {
    let (status, v) = api(server, "POST", "/api/push", Some(body));
    assert_eq!(status, 400, "POST /api/push {body:?}: answered {status} {v}");
    let e = v["error"].as_str().unwrap_or_else(|| panic!("400 without an error string for {body:?}: {v}"));
    assert!(!e.trim().is_empty(), "empty error for {body:?}");
    e.to_owned()
}

#[test]
fn bad_requests_and_failing_destinations_are_reported_and_disturb_nothing() {
    let server = Server::start(&[]);
    let mut publisher = Publisher::ffmpeg(&server.rtmp_url(NAME), 800);
    server.wait_stream_live(NAME, Duration::from_secs(15));
    let player = ArrivalPlayer::start("player of our stream", &server.rtmp_url(NAME));
    player.wait_frames(15, Duration::from_secs(15));
    let t_begin = Instant::now();

    // --- Requests refused at once -------------------------------------------------
    for body in ["{\"stream\": ", "not json", "{\"stream\": \"pushsrc\"}", "{\"url\": \"rtmp://127.0.0.1:1935/live/x\"}", "{}"] {
        bad_request(&server, body);
    }
    for url in ["not a url", "rtmp://", "rtmp:///live/x", "rtmp://127.0.0.1:99999/live/x", "rtmp://127.0.0.1:port/live/x"] {
        let body = serde_json::json!({ "stream": NAME, "url": url }).to_string();
        let e = bad_request(&server, &body);
        assert!(e.starts_with("bad push url"), "unparsable url {url:?}: error {e:?} (want \"bad push url: ...\")");
    }
    for (url, scheme) in [("http://127.0.0.1:1935/live/x", "http"), ("srt://127.0.0.1:9000/live/x", "srt")] {
        let body = serde_json::json!({ "stream": NAME, "url": url }).to_string();
        let e = bad_request(&server, &body);
        assert!(
            e.starts_with("bad push url") && e.contains(&format!("unsupported scheme '{scheme}'")),
            "unknown scheme {url:?}: error {e:?}"
        );
    }
    let (status, v) = post_push(&server, "nosuchstream", "rtmp://127.0.0.1:1935/live/x");
    assert_eq!(status, 404, "push of a stream that is not live: {v}");
    assert_eq!(v["error"].as_str(), Some("stream nosuchstream is not live"), "{v}");
    assert!(list_pushes(&server).is_empty(), "refused requests created pushes: {:?}", list_pushes(&server));

    // --- Destinations that fail after the 201 -----------------------------------------
    let reject = FakeDest::start(FakeMode::Reject("go away".into()));
    let closer = FakeDest::start(FakeMode::CloseInHandshake);
    let refused_port = free_port();
    let refused_url = format!("rtmp://user:s3cret@127.0.0.1:{refused_port}/live/x");
    let id_resolve = start_push(&server, NAME, "rtmp://nosuch.invalid/live/x");
    let id_reject = start_push(&server, NAME, &reject.url("live", "x"));
    let id_close = start_push(&server, NAME, &closer.url("live", "x"));
    let (status, v) = post_push(&server, NAME, &refused_url);
    assert_eq!(status, 201, "push to a refused port is accepted (it fails later): {v}");
    let id_refused = v["id"].as_str().unwrap_or_else(|| panic!("201 without id: {v}")).to_owned();
    assert!(!v.to_string().contains("s3cret"), "the 201 shows the URL's password: {v}");
    assert!(v["url"].as_str().unwrap_or("").contains(&format!("127.0.0.1:{refused_port}/live/x")), "{v}");

    // Duplicate: 409, password still hidden.
    let (status, v) = post_push(&server, NAME, &refused_url);
    assert_eq!(status, 409, "the same stream to the same URL again: {v}");
    let e = v["error"].as_str().unwrap_or("");
    assert!(e.starts_with("already pushing") && e.contains(NAME), "409 error {e:?}");
    assert!(!e.contains("s3cret"), "the 409 shows the URL's password: {e}");

    let port_s = refused_port.to_string();
    let cases: Vec<(&str, &str, ErrorCheck)> = vec![
        (
            id_resolve.as_str(),
            "retrying, last_error \"resolve nosuch.invalid: ...\"",
            Box::new(|e| e.starts_with("resolve") && e.contains("nosuch.invalid")),
        ),
        (
            id_reject.as_str(),
            "retrying, last_error naming NetConnection.Connect.Rejected and \"go away\"",
            Box::new(|e| e.contains("NetConnection.Connect.Rejected") && e.contains("go away")),
        ),
        (id_close.as_str(), "retrying, last_error naming the handshake", Box::new(|e| e.contains("handshake"))),
        (
            id_refused.as_str(),
            "retrying, last_error \"connect 127.0.0.1:PORT: ... refused\"",
            Box::new(move |e| e.contains("connect") && e.contains(&port_s) && e.to_ascii_lowercase().contains("refused")),
        ),
    ];
    let mut first_seen = Vec::new();
    for (id, what, pred) in &cases {
        let p = wait_push(&server, id, Duration::from_secs(10), what, |p| state(p) == "retrying" && pred(&last_error(p)));
        assert!(!p.to_string().contains("s3cret"), "GET /api/push/{id} shows a password: {p}");
        eprintln!("{id}: {} reconnects {} last_error {:?}", state(&p), num(&p, "reconnects"), last_error(&p));
        first_seen.push(num(&p, "reconnects"));
    }
    // Each keeps retrying (backoff 1 s, 2 s, ...): the reconnect count grows.
    for ((id, _, _), r0) in cases.iter().zip(&first_seen) {
        let want = (*r0 + 1).max(2);
        wait_push(&server, id, Duration::from_secs(12), &format!("reconnects to grow from {r0} to {want}"), |p| {
            num(p, "reconnects") >= want && state(p) != "pushing" && state(p) != "stopped"
        });
    }
    let reconnects: u64 = cases.iter().map(|(id, _, _)| num(&get_push(&server, id), "reconnects")).sum();
    let m = server.metrics();
    let failing = m.sum_where("rtcbridge_pushes", &[("state", "retrying")]) + m.sum_where("rtcbridge_pushes", &[("state", "connecting")]);
    assert_eq!(failing, 4.0, "4 failing pushes retrying or connecting:\n{}", m.text);
    assert!(
        m.sum("rtcbridge_push_reconnects_total") >= reconnects as f64,
        "rtcbridge_push_reconnects_total below the {reconnects} reconnects the API showed just before:\n{}",
        m.text
    );

    // The fakes saw what the push sent: connect with app and tcUrl from the URL, and
    // more than one attempt each.
    let conns = reject.conns();
    assert!(conns.len() >= 2, "the rejecting destination saw {} connections: {}", conns.len(), reject.describe());
    let c = &conns[0];
    assert_eq!(c.app.as_deref(), Some("live"), "connect app: {}", reject.describe());
    assert_eq!(c.tc_url.as_deref(), Some(format!("rtmp://127.0.0.1:{}/live", reject.port).as_str()), "connect tcUrl: {}", reject.describe());
    assert!(closer.conn_count() >= 2, "the closing destination saw {} connections", closer.conn_count());

    // Log lines name each failing push; no password anywhere in the log.
    let log = server.log();
    for (id, _, _) in &cases {
        assert!(log.lines().any(|l| l.contains(id) && l.contains("failed")), "no log line \"push {id} ...: failed: ...\":\n{}", tail(&log, 40));
    }
    assert!(!log.contains("s3cret"), "the server log shows a push URL's password:\n{}", log.lines().filter(|l| l.contains("s3cret")).collect::<Vec<_>>().join("\n"));

    // DELETE stops each: 200, stopped, still listed with its last error, no more attempts.
    for (id, _, _) in &cases {
        let (status, v) = delete_push(&server, id);
        assert_eq!(status, 200, "DELETE {id}: {v}");
        assert_eq!(v["state"].as_str(), Some("stopped"), "{v}");
    }
    thread::sleep(Duration::from_millis(300)); // an attempt already under way lands
    let (n_reject, n_close) = (reject.conn_count(), closer.conn_count());
    thread::sleep(Duration::from_secs(3));
    for (id, _, _) in &cases {
        let p = get_push(&server, id);
        assert_eq!(state(&p), "stopped", "{p}");
        assert!(!last_error(&p).is_empty(), "a stopped push keeps its last error: {p}");
    }
    assert_eq!(reject.conn_count(), n_reject, "the rejecting destination was tried again after DELETE");
    assert_eq!(closer.conn_count(), n_close, "the closing destination was tried again after DELETE");

    // Nothing else was disturbed: the player got its frames all along.
    let t_end = Instant::now();
    let secs = t_end.duration_since(t_begin).as_secs_f64();
    let frames = player.frames_between(t_begin, t_end);
    let (gap, media_gap) = player.max_gaps(t_begin, t_end);
    assert!(
        frames >= min_video_frames(secs, 0.9),
        "player of our stream got {frames} video frames in {secs:.1} s of bad requests and failing pushes"
    );
    assert!(gap < Duration::from_millis(500), "player of our stream went {gap:?} without a video frame");
    assert!(media_gap < 0.5, "player of our stream: a {media_gap:.3} s step in video pts");
    assert!(player.non_monotonic().is_none(), "player pts not increasing: {:?}", player.non_monotonic());
    let errors = player.stop();
    assert!(errors.is_empty(), "player of our stream: decode errors {errors:?}");
    assert!(publisher.is_running(), "publisher died: {}", publisher.log());
}

/// The fake destinations the push tests rely on, checked with a real client (ffmpeg):
/// `_error` on connect with the description, a close during the handshake, and a
/// recording destination that accepts a publish and sees headers and media.
#[test]
fn fake_destinations_behave_as_described_with_ffmpeg() {
    let reject = FakeDest::start(FakeMode::Reject("go away".into()));
    let (ok, err) = try_publish(&reject.url("live", "x"));
    assert!(!ok, "ffmpeg published to a destination that rejects connect: {err}");
    assert!(err.contains("go away"), "ffmpeg's error names the rejection: {err}");
    assert_eq!(reject.conns().first().and_then(|c| c.app.clone()).as_deref(), Some("live"));

    let closer = FakeDest::start(FakeMode::CloseInHandshake);
    let (ok, err) = try_publish(&closer.url("live", "x"));
    assert!(!ok, "ffmpeg published to a destination that closes during the handshake: {err}");
    assert_eq!(closer.conn_count(), 1);

    let rec = FakeDest::start(FakeMode::Record);
    let (ok, err) = try_publish(&rec.url("live", "x"));
    assert!(ok, "ffmpeg could not publish to the recording destination: {err}\n{}", rec.describe());
    let c = rec.conns().into_iter().next().expect("a connection");
    assert_eq!(c.publish_name.as_deref(), Some("x"), "{}", rec.describe());
    let first_video = c.messages.iter().find(|m| m.is_video()).expect("video recorded");
    assert!(first_video.is_avc_header(), "ffmpeg's first video message is its sequence header: {first_video:?}");
    assert!(c.messages.iter().filter(|m| m.is_video()).count() >= 25, "{}", rec.describe());
}
