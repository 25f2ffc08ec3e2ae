//! HTTP endpoints on `--http`: the demo page, health, stream list, Prometheus metrics.

use std::fmt::Write as _;

use super::Shared;
use crate::proto::http::{response, Request};
use crate::relay::webrtc::RtcDrop;
use crate::relay::StreamStats;

/// Plain HTTP routes (WebSocket upgrades and WHIP are handled by the worker).
pub fn handle(req: &Request<'_>, shared: &Shared) -> Vec<u8> {
    let authz = req.header("authorization");
    let api_route = req.path.starts_with("/api/") || req.path == "/api" || req.path.starts_with("/debug/");
    if api_route && !shared.access.api_ok(authz) {
        return unauthorized("/api needs Authorization: Bearer TOKEN (--api-token)\n");
    }
    if req.path == "/metrics" && !shared.access.metrics_ok(authz) {
        return unauthorized("/metrics needs Authorization: Bearer TOKEN (--metrics-token)\n");
    }
    match (req.method, req.path) {
        ("GET" | "HEAD", "/healthz") => match unhealthy(shared) {
            None => response(200, "OK", "text/plain", b"ok"),
            Some(why) => response(503, "Service Unavailable", "text/plain", format!("unhealthy: {why}\n").as_bytes()),
        },
        ("POST", p) if shared.cfg.debug_faults && p.starts_with("/debug/fault/") => debug_fault(p, req.query, shared),
        ("GET", "/api/streams") => response(200, "OK", "application/json", streams_json(shared).as_bytes()),
        ("GET", "/api/cluster") => match &shared.cluster {
            Some(c) => response(200, "OK", "application/json", c.to_json().to_string().as_bytes()),
            None => json_error(404, "Not Found", "not in a cluster (--cluster redis://HOST:PORT)"),
        },
        ("GET", "/api/lb") => match shared.cluster.as_ref().map(|c| c.lb_json()) {
            Some(Some(v)) => response(200, "OK", "application/json", v.to_string().as_bytes()),
            Some(None) => json_error(503, "Service Unavailable", "no live node known yet"),
            None => json_error(404, "Not Found", "not in a cluster (--cluster redis://HOST:PORT)"),
        },
        ("GET", "/api/push") => response(200, "OK", "application/json", shared.pushes.list_json().as_bytes()),
        ("GET", p) if p.starts_with("/api/push/") => match shared.pushes.get(p.trim_start_matches("/api/push/")) {
            Some(e) => response(200, "OK", "application/json", e.to_json().to_string().as_bytes()),
            None => json_error(404, "Not Found", "no such push"),
        },
        ("GET", "/metrics") => response(200, "OK", "text/plain; version=0.0.4", metrics(shared).as_bytes()),
        ("GET", "/" | "/index.html") => response(200, "OK", "text/html; charset=utf-8", DEMO_PAGE.as_bytes()),
        ("GET" | "HEAD", _) => response(404, "Not Found", "text/plain", b"not found\n"),
        _ => response(405, "Method Not Allowed", "text/plain", b"method not allowed\n"),
    }
}

/// An error as JSON: `{"error": message}`.
pub(super) fn json_error(status: u16, reason: &str, message: &str) -> Vec<u8> {
    response(status, reason, "application/json", serde_json::json!({ "error": message }).to_string().as_bytes())
}

/// 401 with a bearer challenge (RFC 6750 §3).
pub(super) fn unauthorized(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nWWW-Authenticate: Bearer\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A worker that has not turned its loop for this long is stalled (every worker turns
/// at least once a second: its heartbeat timer).
pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// Why the server is not healthy: a worker whose loop failed or stalled.
pub fn unhealthy(shared: &Shared) -> Option<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let now_ms = super::now().saturating_duration_since(shared.started).as_millis() as u64;
    let mut why = Vec::new();
    for (i, w) in shared.workers.iter().enumerate() {
        if w.failed.load(Relaxed) {
            why.push(format!("worker {i} failed"));
            continue;
        }
        let at = w.loop_at_ms.load(Relaxed);
        let age = now_ms.saturating_sub(at);
        if at > 0 && age > STALL_AFTER.as_millis() as u64 {
            why.push(format!("worker {i} has not turned its loop for {:.1} s", age as f64 / 1000.0));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// `--debug-faults`: `/debug/fault/panic?worker=N` or `/debug/fault/stall?worker=N&secs=S`.
fn debug_fault(path: &str, query: Option<&str>, shared: &Shared) -> Vec<u8> {
    let arg = |k: &str| {
        query.unwrap_or("").split('&').find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('='))).and_then(|v| v.parse::<u64>().ok())
    };
    let Some(slot) = arg("worker").and_then(|w| shared.faults.get(w as usize)) else {
        return response(400, "Bad Request", "text/plain", b"worker=N required (0..workers-1)\n");
    };
    let fault = match path {
        "/debug/fault/panic" => FAULT_PANIC,
        "/debug/fault/stall" => FAULT_STALL_BASE + arg("secs").unwrap_or(10).min(3600),
        _ => return response(404, "Not Found", "text/plain", b"faults: panic, stall\n"),
    };
    slot.store(fault, std::sync::atomic::Ordering::SeqCst);
    response(202, "Accepted", "text/plain", b"fault armed: the worker takes it at its next heartbeat\n")
}

/// Values of `Shared::faults`: panic, or stall for (value - FAULT_STALL_BASE) seconds.
pub const FAULT_PANIC: u64 = 1;
pub const FAULT_STALL_BASE: u64 = 1000;

/// The publisher demo page (Flashphoner-compatible protocol), embedded in the binary.
const DEMO_PAGE: &str = include_str!("../web/index.html");

fn codec_name_video(id: u64) -> &'static str {
    match id {
        7 => "H264",
        12 => "H265",
        _ => "unknown",
    }
}

fn codec_name_audio(id: u64) -> &'static str {
    match id {
        10 => "aac",
        7 => "pcma",
        8 => "pcmu",
        2 => "mp3",
        13 => "opus",
        _ => "unknown",
    }
}

pub fn streams_json(shared: &Shared) -> String {
    let rows = shared.registry.live();
    let streams: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let s = &r.stats;
            let vc = StreamStats::get(&s.video_codec);
            let ac = StreamStats::get(&s.audio_codec);
            let video = if vc != 0 {
                serde_json::json!({
                    "codec": codec_name_video(vc),
                    "width": StreamStats::get(&s.width),
                    "height": StreamStats::get(&s.height),
                    "frames": StreamStats::get(&s.video_frames),
                    "keyframes": StreamStats::get(&s.keyframes),
                })
            } else {
                serde_json::Value::Null
            };
            let audio = if ac != 0 {
                serde_json::json!({ "codec": codec_name_audio(ac), "frames": StreamStats::get(&s.audio_frames) })
            } else {
                serde_json::Value::Null
            };
            let kf = StreamStats::get(&s.keyframe_at_us);
            let gop_age_ms = if kf == 0 {
                serde_json::Value::Null
            } else {
                let now_us = super::now().saturating_duration_since(shared.started).as_micros() as u64;
                serde_json::json!(now_us.saturating_sub(kf) / 1000)
            };
            let webrtc = if r.source == "webrtc" {
                serde_json::json!({
                    "av_offset_ms": s.av_offset_ms.load(std::sync::atomic::Ordering::Relaxed),
                    "av_sr_skew_ms": s.av_sr_skew_ms.load(std::sync::atomic::Ordering::Relaxed),
                    "av_sr_shift_ms": s.av_sr_shift_ms.load(std::sync::atomic::Ordering::Relaxed),
                    "keyframe_requests": StreamStats::get(&s.plis),
                    "rtp_packets": StreamStats::get(&s.rtp_packets),
                    "rtp_lost": StreamStats::get(&s.rtp_lost),
                    "nacks": StreamStats::get(&s.nacks),
                    "transcode": transcode_json(s),
                })
            } else {
                serde_json::Value::Null
            };
            serde_json::json!({
                "name": &*r.name,
                "source": r.source,
                "video": video,
                "audio": audio,
                "players": s.players.load(std::sync::atomic::Ordering::Relaxed).max(0),
                "gop_age_ms": gop_age_ms,
                "webrtc": webrtc,
                "webrtc_viewers": s.webrtc_viewers.load(std::sync::atomic::Ordering::Relaxed).max(0),
                "playback": playback_json(s),
            })
        })
        .collect();
    serde_json::json!({ "streams": streams }).to_string()
}

/// WebRTC playback of a stream: what went out to its viewers, what they reported,
/// and what making it cost (AAC → Opus for an RTMP source).
fn playback_json(s: &StreamStats) -> serde_json::Value {
    let opus = StreamStats::get(&s.opus_packets);
    let opus_ns = StreamStats::get(&s.opus_ns);
    let vframes = StreamStats::get(&s.video_transcoded_frames);
    let vns = StreamStats::get(&s.video_transcode_ns);
    serde_json::json!({
        "rtp_packets_out": StreamStats::get(&s.rtp_packets_out),
        "rtp_bytes_out": StreamStats::get(&s.rtp_bytes_out),
        "retransmits": StreamStats::get(&s.retransmits),
        "plis_received": StreamStats::get(&s.plis_received),
        "viewer_loss_percent": StreamStats::get(&s.viewer_loss_256) as f64 * 100.0 / 256.0,
        "viewer_rtt_ms": StreamStats::get(&s.viewer_rtt_us) as f64 / 1000.0,
        "source_has_bframes": StreamStats::get(&s.has_bframes) != 0,
        "aac_to_opus": if opus == 0 { serde_json::Value::Null } else {
            serde_json::json!({ "packets": opus, "total_ms": opus_ns / 1_000_000, "us_per_packet": (opus_ns / opus) as f64 / 1000.0 })
        },
        "transcoded_viewers": s.transcoded_viewers.load(std::sync::atomic::Ordering::Relaxed).max(0),
        "h264_transcode": if vns == 0 { serde_json::Value::Null } else {
            serde_json::json!({ "frames_out": vframes, "total_ms": vns / 1_000_000, "us_per_frame": vns.checked_div(vframes).unwrap_or(0) as f64 / 1000.0 })
        },
    })
}

/// Opus → AAC transcoding cost of a stream: packets, total ms, µs per packet
/// (null when the stream's audio is not transcoded).
fn transcode_json(s: &StreamStats) -> serde_json::Value {
    let packets = StreamStats::get(&s.transcoded_packets);
    if packets == 0 {
        return serde_json::Value::Null;
    }
    let ns = StreamStats::get(&s.transcode_ns);
    serde_json::json!({
        "packets": packets,
        "total_ms": ns / 1_000_000,
        "us_per_packet": (ns / packets) as f64 / 1000.0,
        "aac_channels": StreamStats::get(&s.aac_channels),
    })
}

/// A per-worker metric: name, help text, and how to read it.
type WorkerMetric<T> = (&'static str, &'static str, fn(&crate::relay::WorkerStats) -> T);

/// One Prometheus histogram per worker from its bucket counters (upper bounds in ms,
/// the last counter is +Inf) and, when kept, the sum in microseconds.
fn histogram(
    o: &mut String,
    name: &str,
    help: &str,
    shared: &Shared,
    bounds_ms: &[f64],
    counters: impl Fn(&crate::relay::WorkerStats) -> (&[std::sync::atomic::AtomicU64], Option<u64>),
) {
    use std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, w) in shared.workers.iter().enumerate() {
        let (buckets, sum_us) = counters(w);
        let mut cum = 0u64;
        for (j, c) in buckets.iter().enumerate() {
            cum += c.load(Relaxed);
            let le = bounds_ms.get(j).map(|ms| format!("{}", ms / 1000.0)).unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(o, "{name}_bucket{{worker=\"{i}\",le=\"{le}\"}} {cum}");
        }
        if let Some(us) = sum_us {
            let _ = writeln!(o, "{name}_sum{{worker=\"{i}\"}} {}", us as f64 / 1e6);
        }
        let _ = writeln!(o, "{name}_count{{worker=\"{i}\"}} {cum}");
    }
}

pub fn metrics(shared: &Shared) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut o = String::with_capacity(4096);
    let gauges: [WorkerMetric<i64>; 6] = [
        ("rtcbridge_transcodes", "H.264 transcodes for WebRTC viewers running (--transcode).", |w| w.transcodes.load(Relaxed)),
        ("rtcbridge_webrtc_viewers", "WebRTC viewers (playStream, WHEP) with ICE and DTLS up.", |w| w.webrtc_viewers.load(Relaxed)),
        ("rtcbridge_connections", "Open TCP connections (RTMP and HTTP).", |w| w.connections.load(Relaxed)),
        ("rtcbridge_players", "RTMP players.", |w| w.players.load(Relaxed)),
        ("rtcbridge_publishers", "Publishers.", |w| w.publishers.load(Relaxed)),
        ("rtcbridge_cluster_pulls", "Streams pulled from other cluster nodes (one per stream, however many players).", |w| w.pulls.load(Relaxed)),
    ];
    for (name, help, f) in gauges {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, w) in shared.workers.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", f(w));
        }
    }
    let _ = writeln!(o, "# HELP rtcbridge_streams Live streams.\n# TYPE rtcbridge_streams gauge");
    let _ = writeln!(o, "rtcbridge_streams {}", shared.registry.live_count());
    let _ = writeln!(
        o,
        "# HELP rtcbridge_webrtc_pending WebRTC sessions (publishers and viewers) waiting for ICE and DTLS, all workers (--max-pending-webrtc).\n# TYPE rtcbridge_webrtc_pending gauge\nrtcbridge_webrtc_pending {}",
        shared.pending_webrtc.current(())
    );
    let _ = writeln!(
        o,
        "# HELP rtcbridge_dtls_engine_panics_total Panics inside the DTLS library caught by our guard (only that session failed).\n# TYPE rtcbridge_dtls_engine_panics_total counter\nrtcbridge_dtls_engine_panics_total {}",
        crate::proto::dtls::ENGINE_PANICS.load(Relaxed)
    );
    let counters: [WorkerMetric<u64>; 8] = [
        ("rtcbridge_bytes_in_total", "Bytes received on TCP.", |w| w.bytes_in.load(Relaxed)),
        ("rtcbridge_bytes_out_total", "Bytes written on TCP.", |w| w.bytes_out.load(Relaxed)),
        ("rtcbridge_evictions_total", "Players disconnected for staying behind.", |w| w.evictions.load(Relaxed)),
        ("rtcbridge_protocol_errors_total", "Connections ended for bad input.", |w| w.protocol_errors.load(Relaxed)),
        ("rtcbridge_ignored_messages_total", "Peer messages ignored (unsupported or unreadable).", |w| w.ignored_messages.load(Relaxed)),
        ("rtcbridge_mesh_full_total", "Media hand-offs dropped: cross-core queue full.", |w| w.mesh_full.load(Relaxed)),
        ("rtcbridge_idle_closed_total", "RTMP connections closed for neither publishing nor playing (--rtmp-idle-timeout).", |w| w.idle_closed.load(Relaxed)),
        ("rtcbridge_publisher_timeouts_total", "RTMP publishers disconnected for sending no media (--publisher-timeout).", |w| w.publisher_timeouts.load(Relaxed)),
    ];
    for (name, help, f) in counters {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, w) in shared.workers.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {}", f(w));
        }
    }
    histogram(
        &mut o,
        "rtcbridge_loop_turn_seconds",
        "How long each event-loop turn took (wake-up to the end of its writes).",
        shared,
        &crate::relay::stats::LOOP_TURN_BUCKETS_MS,
        |w| (&w.loop_turn_buckets[..], None),
    );
    let _ = writeln!(o, "# HELP rtcbridge_connections_refused_total Connections closed at accept, by reason.\n# TYPE rtcbridge_connections_refused_total counter");
    for (i, w) in shared.workers.iter().enumerate() {
        for (reason, c) in [("limit", &w.refused_limit), ("per_ip", &w.refused_per_ip), ("no_fd", &w.refused_no_fd)] {
            let _ = writeln!(o, "rtcbridge_connections_refused_total{{worker=\"{i}\",reason=\"{reason}\"}} {}", c.load(Relaxed));
        }
    }
    let _ = writeln!(o, "# HELP rtcbridge_drops_total Media messages dropped for slow players, by what was dropped.\n# TYPE rtcbridge_drops_total counter");
    for (i, w) in shared.workers.iter().enumerate() {
        for (reason, c) in [("inter", &w.drops_inter), ("keyframe", &w.drops_keyframe), ("audio", &w.drops_audio)] {
            let _ = writeln!(o, "rtcbridge_drops_total{{worker=\"{i}\",reason=\"{reason}\"}} {}", c.load(Relaxed));
        }
    }
    let _ = writeln!(o, "# HELP rtcbridge_webrtc_dropped_total WebRTC datagrams discarded, by why (the session lives on).\n# TYPE rtcbridge_webrtc_dropped_total counter");
    for (i, w) in shared.workers.iter().enumerate() {
        for why in RtcDrop::ALL {
            let n = w.webrtc_dropped.get(why.index()).map_or(0, |c| c.load(Relaxed));
            let _ = writeln!(o, "rtcbridge_webrtc_dropped_total{{worker=\"{i}\",reason=\"{}\"}} {n}", why.label());
        }
    }
    histogram(
        &mut o,
        "rtcbridge_server_latency_seconds",
        "Media: the input that completed a frame (last RTP packet or RTMP chunk) in to its FLV message written to players.",
        shared,
        &crate::relay::stats::LATENCY_BUCKETS_MS,
        |w| (&w.latency_buckets[..], Some(w.latency_sum_us.load(Relaxed))),
    );
    // Per stream (WebRTC ingest counters are zero for RTMP publishers).
    type StreamMetric = (&'static str, &'static str, &'static str, fn(&StreamStats) -> u64);
    let per_stream: [StreamMetric; 19] = [
        ("rtcbridge_rtp_out_packets_total", "counter", "RTP packets sent to WebRTC viewers (all viewers of the stream).", |s| StreamStats::get(&s.rtp_packets_out)),
        ("rtcbridge_rtp_out_bytes_total", "counter", "RTP bytes sent to WebRTC viewers, before SRTP.", |s| StreamStats::get(&s.rtp_bytes_out)),
        ("rtcbridge_rtp_retransmits_total", "counter", "RTP packets sent again for a viewer's NACK.", |s| StreamStats::get(&s.retransmits)),
        ("rtcbridge_viewer_plis_total", "counter", "Keyframe requests (PLI/FIR) received from WebRTC viewers.", |s| StreamStats::get(&s.plis_received)),
        ("rtcbridge_stream_aac_to_opus_packets_total", "counter", "Opus packets made from the stream's AAC for WebRTC viewers.", |s| StreamStats::get(&s.opus_packets)),
        ("rtcbridge_stream_h264_transcode_nanoseconds_total", "counter", "Time spent transcoding the stream's H.264 for WebRTC viewers (decode + encode).", |s| StreamStats::get(&s.video_transcode_ns)),
        ("rtcbridge_stream_keyframe_at_microseconds", "gauge", "When the latest keyframe arrived, since server start (GOP age = uptime - this).", |s| StreamStats::get(&s.keyframe_at_us)),
        ("rtcbridge_stream_video_frames_total", "counter", "Video frames received.", |s| StreamStats::get(&s.video_frames)),
        ("rtcbridge_stream_audio_frames_total", "counter", "Audio frames received.", |s| StreamStats::get(&s.audio_frames)),
        ("rtcbridge_stream_rtp_packets_total", "counter", "RTP packets received (WebRTC).", |s| StreamStats::get(&s.rtp_packets)),
        ("rtcbridge_stream_rtp_lost_total", "counter", "RTP packets given up as lost after NACKs.", |s| StreamStats::get(&s.rtp_lost)),
        ("rtcbridge_stream_rtp_recovered_total", "counter", "RTP packets that arrived after a NACK.", |s| StreamStats::get(&s.rtp_recovered)),
        ("rtcbridge_stream_nacks_total", "counter", "Sequence numbers requested with NACK.", |s| StreamStats::get(&s.nacks)),
        ("rtcbridge_stream_plis_total", "counter", "Keyframe requests (PLI) sent.", |s| StreamStats::get(&s.plis)),
        ("rtcbridge_stream_units_dropped_total", "counter", "Video frames thrown away broken (a hole from loss, a malformed packet).", |s| StreamStats::get(&s.units_dropped)),
        (
            "rtcbridge_stream_units_skipped_total",
            "counter",
            "Whole video frames not sent because they cannot be decoded yet (a delta frame awaiting a keyframe, or before SPS/PPS).",
            |s| StreamStats::get(&s.units_skipped),
        ),
        ("rtcbridge_stream_transcoded_packets_total", "counter", "Opus packets transcoded to AAC.", |s| StreamStats::get(&s.transcoded_packets)),
        ("rtcbridge_stream_transcode_nanoseconds_total", "counter", "Time spent transcoding Opus to AAC (decode + encode).", |s| StreamStats::get(&s.transcode_ns)),
        ("rtcbridge_stream_jitter_microseconds", "gauge", "Video interarrival jitter (RFC 3550 A.8).", |s| StreamStats::get(&s.jitter_us)),
    ];
    let rows = shared.registry.live();
    let _ = writeln!(o, "# HELP rtcbridge_stream_av_offset_ms Latest audio minus latest video time on the stream timeline (WebRTC).\n# TYPE rtcbridge_stream_av_offset_ms gauge");
    for r in &rows {
        let label: String = r.name.chars().map(|c| if c == '"' || c == '\\' || c == '\n' { '_' } else { c }).collect();
        let _ = writeln!(o, "rtcbridge_stream_av_offset_ms{{stream=\"{label}\",source=\"{}\"}} {}", r.source, r.stats.av_offset_ms.load(Relaxed));
    }
    for (name, kind, help, f) in per_stream {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &rows {
            let label: String = r.name.chars().map(|c| if c == '"' || c == '\\' || c == '\n' { '_' } else { c }).collect();
            let _ = writeln!(o, "{name}{{stream=\"{label}\",source=\"{}\"}} {}", r.source, f(&r.stats));
        }
    }
    shared.pushes.metrics(&mut o);
    o
}
