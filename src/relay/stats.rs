//! Counters shared with the HTTP API: written by one core with relaxed
//! atomics, read by whichever core serves `/metrics` or `/api/streams`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use super::webrtc::RtcDrop;

/// Per-worker counters and gauges (`/metrics`).
#[derive(Default, Debug)]
pub struct WorkerStats {
    pub connections: AtomicI64,
    pub players: AtomicI64,
    pub publishers: AtomicI64,
    /// Cluster pulls (streams played from another node and published here).
    pub pulls: AtomicI64,
    /// WebRTC viewers (playStream, WHEP) with ICE and DTLS up.
    pub webrtc_viewers: AtomicI64,
    /// H.264 transcodes for WebRTC viewers running on this core.
    pub transcodes: AtomicI64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub drops_inter: AtomicU64,
    pub drops_keyframe: AtomicU64,
    pub drops_audio: AtomicU64,
    pub evictions: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Messages a peer sent that we ignore (shared objects, aggregates, unknown types).
    pub ignored_messages: AtomicU64,
    /// Media hand-offs to other cores dropped because the mesh queue was full.
    pub mesh_full: AtomicU64,
    /// Connections closed at accept: over `--max-conns`, over `--max-conns-per-ip`, out
    /// of file descriptors.
    pub refused_limit: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub refused_no_fd: AtomicU64,
    /// RTMP connections closed for neither publishing nor playing.
    pub idle_closed: AtomicU64,
    /// RTMP publishers disconnected for sending no media.
    pub publisher_timeouts: AtomicU64,
    /// How long each loop turn took (wake-up to the end of its writes), buckets of
    /// `LOOP_TURN_BUCKETS_MS`: how long an event can wait behind the others.
    pub loop_turn_buckets: [AtomicU64; LOOP_TURN_BUCKETS_MS.len() + 1],
    /// The worker's last loop turn, ms since the process started (/healthz: stalled?).
    pub loop_at_ms: AtomicU64,
    /// The worker's loop ended with an error.
    pub failed: std::sync::atomic::AtomicBool,
    /// Server-added latency of media: the input that completed a frame (last RTP packet,
    /// last RTMP chunk) in → its FLV message written to player sockets (cumulative-style buckets of `LATENCY_BUCKETS_MS`).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    pub latency_sum_us: AtomicU64,
    /// WebRTC datagrams discarded, by reason (`RtcDrop::index`).
    pub webrtc_dropped: [AtomicU64; RtcDrop::ALL.len()],
}

/// Upper bounds (ms) of the loop-turn histogram buckets; the last bucket is +Inf.
pub const LOOP_TURN_BUCKETS_MS: [f64; 13] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 1000.0];

/// Upper bounds (ms) of the latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS_MS: [f64; 19] =
    [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

impl WorkerStats {
    /// Count one loop turn's duration.
    pub fn record_turn(&self, d: std::time::Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = LOOP_TURN_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LOOP_TURN_BUCKETS_MS.len());
        if let Some(c) = self.loop_turn_buckets.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count one WebRTC datagram discarded for `why`.
    pub fn webrtc_drop(&self, why: RtcDrop) {
        if let Some(c) = self.webrtc_dropped.get(why.index()) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count one latency sample.
    pub fn record_latency(&self, d: std::time::Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BUCKETS_MS.len());
        if let Some(c) = self.latency_buckets.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

impl WorkerStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    /// Move a gauge by `d`. A decrement stops at zero: a gauge counts things
    /// that exist, so a decrement without its increment (a bug, counted
    /// twice on some path) must not show as a negative number of them.
    /// Each gauge has one writer (its core), so read-modify-write is exact.
    pub fn gauge(c: &AtomicI64, d: i64) {
        if d >= 0 {
            c.fetch_add(d, Relaxed);
        } else {
            let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_add(d).max(0)));
        }
    }
}

/// Per-stream numbers (`/api/streams`), written by the owner core.
#[derive(Default, Debug)]
pub struct StreamStats {
    pub video_frames: AtomicU64,
    pub keyframes: AtomicU64,
    pub audio_frames: AtomicU64,
    /// FLV codec ids (0 = track absent): video 7 = AVC; audio 10 = AAC, 7/8 = G.711.
    pub video_codec: AtomicU64,
    pub audio_codec: AtomicU64,
    pub width: AtomicU64,
    pub height: AtomicU64,
    /// Players on every core.
    pub players: AtomicI64,
    /// WebRTC ingest (zero for RTMP publishers).
    pub rtp_packets: AtomicU64,
    pub rtp_lost: AtomicU64,
    pub rtp_recovered: AtomicU64,
    pub nacks: AtomicU64,
    pub plis: AtomicU64,
    /// Video interarrival jitter, microseconds.
    pub jitter_us: AtomicU64,
    /// Video frames thrown away broken (a hole from loss, a malformed packet).
    pub units_dropped: AtomicU64,
    /// Whole video frames not sent because they cannot be decoded yet (a delta frame
    /// while a keyframe is awaited after loss or at the start, or before SPS/PPS).
    pub units_skipped: AtomicU64,
    /// Latest audio minus latest video time on the stream's timeline, ms (WebRTC).
    pub av_offset_ms: AtomicI64,
    /// How much later the sender's RTCP SR NTP mapping puts audio against video than
    /// this stream's timeline does, ms (WebRTC).
    pub av_sr_skew_ms: AtomicI64,
    /// The correction the sender reports' drift has moved audio by so far, ms (WebRTC).
    pub av_sr_shift_ms: AtomicI64,
    /// When the latest keyframe arrived, µs since the server started (0 = none yet).
    pub keyframe_at_us: AtomicU64,
    /// Opus packets decoded and re-encoded as AAC, and the wall time it took (ns).
    pub transcoded_packets: AtomicU64,
    pub transcode_ns: AtomicU64,
    /// Channels of the AAC the stream's Opus is transcoded to (0: none).
    pub aac_channels: AtomicU64,
    /// WebRTC viewers on every core (Flashphoner playStream, WHEP).
    pub webrtc_viewers: AtomicI64,
    /// RTP to WebRTC viewers: packets and bytes sent (all viewers), packets sent again
    /// for a NACK, PLI/FIR received from viewers.
    pub rtp_packets_out: AtomicU64,
    pub rtp_bytes_out: AtomicU64,
    pub retransmits: AtomicU64,
    pub plis_received: AtomicU64,
    /// The latest receiver report of any viewer: fraction lost (1/256 units) and round
    /// trip time (µs, from LSR/DLSR).
    pub viewer_loss_256: AtomicU64,
    pub viewer_rtt_us: AtomicU64,
    /// AAC → Opus for WebRTC viewers of an RTMP source: packets made and time spent.
    pub opus_packets: AtomicU64,
    pub opus_ns: AtomicU64,
    /// H.264 transcodes for WebRTC viewers (B-frames or a profile the viewer lacks):
    /// frames encoded and time spent.
    pub video_transcoded_frames: AtomicU64,
    pub video_transcode_ns: AtomicU64,
    /// The source's H.264 has B-frames (a non-zero composition time was seen): 1.
    pub has_bframes: AtomicU64,
    /// WebRTC viewers of the stream's transcoded video (on every core): the publisher's
    /// core runs the transcode while this is above zero.
    pub transcoded_viewers: AtomicI64,
    /// The stream's H.264 cannot be transcoded (the transcoder refused its configuration): 1.
    pub transcode_refused: AtomicU64,
    /// The H.264 sequence header's profile_idc << 8 | constraint flags (0: unknown).
    pub video_profile: AtomicU64,
}

impl StreamStats {
    /// Count one frame an RTMP publisher sent (FLV tag inspection: codecs, frames,
    /// keyframes, and the size its onMetaData announces).
    pub fn count_rtmp_input(&self, msg: &super::frame::Frame) {
        let payload = msg.body();
        match msg.kind {
            crate::proto::flv::MediaKind::Video => {
                if let Some(b0) = payload.first() {
                    self.video_codec.store(u64::from(b0 & 0x0f), Relaxed);
                }
                self.note_video(payload, msg.config);
                if !msg.config {
                    self.video_frames.fetch_add(1, Relaxed);
                    if msg.keyframe {
                        self.keyframes.fetch_add(1, Relaxed);
                    }
                }
            }
            crate::proto::flv::MediaKind::Audio => {
                if let Some(b0) = payload.first() {
                    self.audio_codec.store(u64::from(b0 >> 4), Relaxed);
                }
                if !msg.config {
                    self.audio_frames.fetch_add(1, Relaxed);
                }
            }
            crate::proto::flv::MediaKind::Data => {
                if let Ok(vals) = crate::proto::rtmp::amf0::decode_all(payload) {
                    if let Some(obj) = vals.get(1) {
                        for (key, slot) in [("width", &self.width), ("height", &self.height)] {
                            if let Some(v) = obj.get(key).and_then(|v| v.as_f64()) {
                                if v > 0.0 && v < 65536.0 {
                                    slot.store(v as u64, Relaxed);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// What a WebRTC viewer needs to know of a video frame: the H.264 profile of an
    /// AVC sequence header, and whether frames carry a composition time (B-frames).
    pub fn note_video(&self, body: &[u8], config: bool) {
        if body.first().map(|b| b & 0x0f) != Some(7) {
            return;
        }
        if config {
            // FLV prefix (5 bytes), then AVCDecoderConfigurationRecord: version, profile, compat.
            if let (Some(&p), Some(&c)) = (body.get(6), body.get(7)) {
                self.video_profile.store(u64::from(p) << 8 | u64::from(c), Relaxed);
            }
        } else if crate::proto::packetize::composition_time(body).is_some_and(|c| c != 0) {
            self.has_bframes.store(1, Relaxed);
        }
    }

    /// A new publisher took the name: its media counters start from zero.
    pub fn reset_media(&self) {
        for c in [
            &self.video_frames,
            &self.keyframes,
            &self.audio_frames,
            &self.video_codec,
            &self.audio_codec,
            &self.width,
            &self.height,
            &self.rtp_packets,
            &self.rtp_lost,
            &self.rtp_recovered,
            &self.nacks,
            &self.plis,
            &self.jitter_us,
            &self.units_dropped,
            &self.units_skipped,
            &self.transcoded_packets,
            &self.transcode_ns,
            &self.aac_channels,
            &self.opus_packets,
            &self.opus_ns,
            &self.video_transcoded_frames,
            &self.video_transcode_ns,
            &self.has_bframes,
            &self.video_profile,
        ] {
            c.store(0, Relaxed);
        }
        for c in [&self.av_offset_ms, &self.av_sr_skew_ms, &self.av_sr_shift_ms] {
            c.store(0, Relaxed);
        }
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_never_go_negative() {
        let s = WorkerStats::default();
        WorkerStats::gauge(&s.publishers, 1);
        WorkerStats::gauge(&s.publishers, -1);
        // The second decrement of one WebRTC publisher (rtc_stop, then unpublish).
        WorkerStats::gauge(&s.publishers, -1);
        assert_eq!(s.publishers.load(Relaxed), 0);
        WorkerStats::gauge(&s.publishers, 3);
        WorkerStats::gauge(&s.publishers, -2);
        assert_eq!(s.publishers.load(Relaxed), 1);
        WorkerStats::gauge(&s.publishers, i64::MIN);
        assert_eq!(s.publishers.load(Relaxed), 0);
    }
}
