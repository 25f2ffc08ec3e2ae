//! Audio/video sync refined by RTCP sender reports (RFC 3550 §6.4.1), sans-IO.
//!
//! A WebRTC publisher's tracks are anchored once, each at its first unit's capture
//! time (webrtc.rs `timeline_ms`), and then follow their own RTP clocks. A sender's
//! reports map every track's RTP clock onto its one wall clock (NTP). If the audio
//! clock runs at a slightly different rate from the video clock (a sound card at
//! 48 kHz ± 100 ppm against the system clock that stamps video: up to 6 ms a minute,
//! over a third of a second in an hour), the mapping says so, and only the reports
//! can: the RTP clocks alone cannot see it.
//!
//! The first pair of reports gives the reference: the anchors already put both tracks
//! at their capture instants as the sender tells them, while its reports put audio at
//! the moment it reached the encoder (with Chromium a steady ~10 ms later; measured
//! against Chromium's own MediaRecorder recording of the same capture, the anchors are
//! the closer of the two; README "Architecture"). So only a change of the
//! report-implied skew from that reference moves the audio timeline, past a 2 ms
//! dead band (the reports' own jitter is ~1 ms), and only by slewing: at most 1 ms per
//! audio unit (5% of a 20 ms packet), so audio timestamps never step backwards and never
//! jump. A change of over 100 ms between two reports is not drift (a sender that reset
//! its clock): it re-bases the reference and moves nothing.

/// Changes of the report-implied skew below this are the reports' own jitter, ms.
pub const DEADBAND_MS: f64 = 2.0;
/// Largest move of the audio timeline per audio unit, ms.
pub const SLEW_MS: f64 = 1.0;
/// A change between consecutive reports larger than this is a discontinuity, ms.
pub const MAX_STEP_MS: f64 = 100.0;

/// One track's clocks as far as sync needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackClock {
    /// Timeline anchor: (extended RTP timestamp, its timeline ms).
    pub anchor: (u64, i64),
    /// Latest extended RTP timestamp received (to extend the report's 32-bit one).
    pub last_ts: u64,
    /// RTP clock rate, Hz.
    pub clock: u32,
    /// Latest sender report: (NTP 32.32, RTP timestamp).
    pub sr: (u64, u32),
}

/// How much later than our timeline the sender's reports put audio against video, ms
/// (positive: the sender says audio belongs later). `None` if it makes no sense.
pub fn sr_skew_ms(video: &TrackClock, audio: &TrackClock) -> Option<f64> {
    // The report's RTP timestamp is 32 bits: extend it next to the latest one received.
    let extend = |t: &TrackClock| t.last_ts as i128 + i128::from(t.sr.1.wrapping_sub(t.last_ts as u32) as i32);
    // Seconds from each anchor to its report, on that track's RTP clock.
    let dv = (extend(video) - video.anchor.0 as i128) as f64 / f64::from(video.clock.max(1));
    let da = (extend(audio) - audio.anchor.0 as i128) as f64 / f64::from(audio.clock.max(1));
    // Sender wall time of the audio anchor minus that of the video anchor.
    let ntp_gap = (audio.sr.0 as i128 - video.sr.0 as i128) as f64 / 4_294_967_296.0;
    let sr_gap_ms = (ntp_gap - da + dv) * 1000.0;
    let skew = sr_gap_ms - (audio.anchor.1 - video.anchor.1) as f64;
    (skew.is_finite() && skew.abs() < 10_000.0).then_some(skew)
}

/// The audio timeline's correction from sender reports.
#[derive(Debug, Default, Clone)]
pub struct SrSync {
    reference: Option<f64>,
    last_skew: Option<f64>,
    target: f64,
    applied: f64,
    rebases: u64,
}

impl SrSync {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new report-implied skew (`sr_skew_ms`, against the uncorrected timeline).
    pub fn on_skew(&mut self, skew: f64) {
        if !skew.is_finite() {
            return;
        }
        let Some(reference) = self.reference else {
            self.reference = Some(skew);
            self.last_skew = Some(skew);
            return;
        };
        let jump = self.last_skew.map_or(0.0, |l| skew - l);
        self.last_skew = Some(skew);
        if jump.abs() > MAX_STEP_MS {
            self.reference = Some(reference + jump);
            self.rebases += 1;
            return;
        }
        let want = skew - reference;
        if (want - self.target).abs() > DEADBAND_MS {
            self.target = want;
        }
    }

    /// Once per audio unit, before timing it: moves the correction toward its target by
    /// at most `SLEW_MS` and returns it in whole ms.
    pub fn step(&mut self) -> i64 {
        let d = (self.target - self.applied).clamp(-SLEW_MS, SLEW_MS);
        self.applied += d;
        self.shift_ms()
    }

    /// The correction applied to audio now, ms.
    pub fn shift_ms(&self) -> i64 {
        self.applied.round() as i64
    }

    /// The latest report-implied skew against the corrected timeline, ms.
    pub fn residual_ms(&self) -> Option<i64> {
        self.last_skew.map(|s| (s - self.applied).round() as i64)
    }

    /// Discontinuities seen (report-implied skew jumping by over `MAX_STEP_MS`).
    pub fn rebases(&self) -> u64 {
        self.rebases
    }
}

/// `ms` moved by `shift` ms, within the FLV timestamp range.
pub fn shifted(ms: u32, shift: i64) -> u32 {
    (i64::from(ms) + shift).clamp(0, i64::from(u32::MAX)) as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// NTP 32.32 of `secs` seconds.
    fn ntp(secs: f64) -> u64 {
        (secs * 4_294_967_296.0) as u64
    }

    /// A sender whose audio and video were captured `gap_ms` apart at the anchors (audio
    /// later), audio sample clock `ppm` fast against its wall clock; reports at `at` s.
    fn clocks(at: f64, gap_ms: f64, ppm: f64, a_anchor_ms: i64) -> (TrackClock, TrackClock) {
        let wall0 = 1_000_000.0; // sender wall clock at the video anchor, s
        let v0: u64 = 4_294_900_000; // 0.75 s before the 32-bit wrap, on purpose
        let a0: u64 = 7_000;
        let v_rtp = v0 + (at * 90_000.0) as u64;
        let a_rtp = a0 + ((at - gap_ms / 1000.0) * 48_000.0 * (1.0 + ppm * 1e-6)) as u64;
        let video = TrackClock { anchor: (v0, 100), last_ts: v_rtp, clock: 90_000, sr: (ntp(wall0 + at), v_rtp as u32) };
        let audio = TrackClock { anchor: (a0, a_anchor_ms), last_ts: a_rtp, clock: 48_000, sr: (ntp(wall0 + at), a_rtp as u32) };
        (video, audio)
    }

    #[test]
    fn skew_is_what_the_reports_say_against_the_anchors() {
        // Anchors 20 ms apart on our timeline (audio at 120), the sender says 30: audio
        // belongs 10 ms later.
        let (v, a) = clocks(5.0, 30.0, 0.0, 120);
        let s = sr_skew_ms(&v, &a).unwrap();
        assert!((s - 10.0).abs() < 0.1, "{s}");
        // The video report's 32-bit timestamp wrapped past the anchor's (v0 + 5 s > 2^32):
        // extended next to the latest received one, the answer is the same.
        assert!(v.sr.1 < v.anchor.0 as u32);
        // Nonsense reports give nothing.
        let mut far = a;
        far.sr.0 = a.sr.0.wrapping_add(ntp(3600.0));
        assert_eq!(sr_skew_ms(&v, &far), None);
    }

    #[test]
    fn the_first_report_is_the_reference_and_is_not_applied() {
        let mut s = SrSync::new();
        s.on_skew(10.0);
        for _ in 0..50 {
            assert_eq!(s.step(), 0);
        }
        // Report jitter inside the dead band moves nothing.
        for j in [10.8, 9.1, 11.9, 8.5] {
            s.on_skew(j);
            assert_eq!(s.step(), 0);
        }
        assert_eq!(s.residual_ms(), Some(9));
    }

    #[test]
    fn drift_is_slewed_in_never_stepping_audio_backwards() {
        let mut s = SrSync::new();
        s.on_skew(10.0);
        s.on_skew(16.0); // audio now belongs 6 ms later than at the start
        let shifts: Vec<i64> = (0..8).map(|_| s.step()).collect();
        assert_eq!(shifts, vec![1, 2, 3, 4, 5, 6, 6, 6]);
        s.on_skew(-4.0); // and now 14 ms earlier than at the start: 20 ms back
        let mut last = None;
        for k in 0..40 {
            // Audio units 20 ms apart keep increasing while the correction slews back.
            let ms = shifted(1000 + 20 * k, s.step());
            assert!(last.is_none_or(|l| ms > l), "{ms} after {last:?}");
            last = Some(ms);
        }
        assert_eq!(s.shift_ms(), -14);
        assert_eq!(s.residual_ms(), Some(10));
    }

    #[test]
    fn a_jump_is_a_discontinuity_not_drift() {
        let mut s = SrSync::new();
        s.on_skew(10.0);
        s.on_skew(510.0);
        assert_eq!(s.step(), 0);
        assert_eq!(s.rebases(), 1);
        // Drift after the jump counts from the new reference.
        s.on_skew(515.0);
        for _ in 0..10 {
            s.step();
        }
        assert_eq!(s.shift_ms(), 5);
    }

    #[test]
    fn a_fast_sound_card_over_ten_minutes_stays_in_sync() {
        // Audio clock 100 ppm fast: by RTP alone audio would run 60 ms ahead of its place
        // after 10 minutes (its timestamps grow faster than the wall clock).
        let mut s = SrSync::new();
        let ppm = 100.0;
        let mut worst: f64 = 0.0;
        for k in 1..=120 {
            let at = f64::from(k) * 5.0; // a report pair every 5 s
            let (v, a) = clocks(at, 30.0, ppm, 120);
            s.on_skew(sr_skew_ms(&v, &a).unwrap());
            for _ in 0..250 {
                s.step(); // 5 s of 20 ms packets
            }
            // Uncorrected, audio at wall time t lands at 120 + t·(1+ppm) on our timeline;
            // corrected, it should land within the dead band of where the sender says.
            let uncorrected_err = at * ppm * 1e-6 * 1000.0;
            let err = uncorrected_err + s.shift_ms() as f64;
            worst = worst.max(err.abs());
        }
        assert!(s.shift_ms() <= -58 && s.shift_ms() >= -61, "shift {}", s.shift_ms());
        assert!(worst <= DEADBAND_MS + 1.0, "worst error {worst:.2} ms");
    }
}
