//! H.264 transcodes for WebRTC viewers (`--transcode`), each on a thread of its
//! own: decoding and encoding a 640x360 frame takes ~5–7 ms (12 ms at 720p),
//! which the worker's event loop must not spend while other connections wait.
//!
//! The worker hands the thread the stream's video frames over a bounded queue
//! and gets the constrained-baseline frames back over another; the thread rings
//! the worker's waker when it has output, and the worker drains it on its next
//! turn (`Worker::transcode_drain`). A full input queue (the thread cannot keep
//! up) drops frames, counted; the transcoder starts again at the next keyframe.
//! Dropping the handle ends the thread after the frame at hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use crate::proto::codec::h264_transcode::{H264Transcoder, TranscodeConfig, TranscodeError};
use crate::relay::Frame;

/// Frames waiting for the thread, and transcoded frames waiting for the worker.
const QUEUE: usize = 64;

enum Job {
    Frame(Arc<Frame>),
    Keyframe,
}

/// One transcoded frame: presentation time (ms), FLV AVC body, and when the source
/// frame that completed it arrived (for the latency histogram).
pub struct Out {
    pub ts: u32,
    pub body: Vec<u8>,
    pub born: Option<Instant>,
}

/// The worker's handle on one stream's transcode thread.
pub struct TranscodeThread {
    tx: SyncSender<Job>,
    rx: Receiver<Out>,
    /// Time the thread spent in the transcoder, ns.
    pub busy_ns: Arc<AtomicU64>,
    /// Input frames dropped because the thread was behind.
    pub dropped: u64,
    /// `busy_ns` already added to the stream's counter.
    reported_ns: u64,
}

impl TranscodeThread {
    /// Start the thread for `name`, first fed `config` (the stream's AVC sequence
    /// header). Errors: the transcoder refuses the configuration, or no thread.
    pub fn start(name: &str, config: &Arc<Frame>, waker: Arc<mio::Waker>) -> Result<Self, String> {
        let mut t = H264Transcoder::new(TranscodeConfig::default()).map_err(|e| e.to_string())?;
        t.push(config.ts, config.body()).map_err(|e: TranscodeError| e.to_string())?;
        let (tx, jobs) = mpsc::sync_channel::<Job>(QUEUE);
        let (out_tx, rx) = mpsc::sync_channel::<Out>(QUEUE);
        let busy_ns = Arc::new(AtomicU64::new(0));
        let busy = Arc::clone(&busy_ns);
        let label = crate::log::peer_str(name).to_string();
        std::thread::Builder::new()
            .name("transcode".into())
            .spawn(move || {
                while let Ok(job) = jobs.recv() {
                    let born = match job {
                        Job::Keyframe => {
                            t.request_keyframe();
                            continue;
                        }
                        Job::Frame(f) => {
                            let t0 = super::now();
                            if let Err(e) = t.push(f.ts, f.body()) {
                                crate::debug!("transcode {label}: {e}");
                            }
                            busy.fetch_add(super::now().saturating_duration_since(t0).as_nanos() as u64, Ordering::Relaxed);
                            f.born
                        }
                    };
                    let mut any = false;
                    while let Some((ts, body)) = t.poll() {
                        // The worker is gone (the handle dropped): end.
                        if out_tx.send(Out { ts, body, born }).is_err() {
                            return;
                        }
                        any = true;
                    }
                    if any {
                        let _ = waker.wake();
                    }
                }
            })
            .map_err(|e| format!("no thread: {e}"))?;
        Ok(TranscodeThread { tx, rx, busy_ns, dropped: 0, reported_ns: 0 })
    }

    /// Queue a video frame of the stream (dropped, counted, if the thread is behind).
    pub fn push(&mut self, frame: &Arc<Frame>) {
        match self.tx.try_send(Job::Frame(Arc::clone(frame))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped += 1,
        }
    }

    /// The next output picture is an IDR (a viewer asked).
    pub fn request_keyframe(&mut self) {
        let _ = self.tx.try_send(Job::Keyframe);
    }

    /// Transcoder time since the last call, ns (for the stream's counter).
    pub fn take_busy_ns(&mut self) -> u64 {
        let now = self.busy_ns.load(Ordering::Relaxed);
        let d = now.saturating_sub(self.reported_ns);
        self.reported_ns = now;
        d
    }

    /// A transcoded frame, if one is ready.
    pub fn poll(&mut self) -> Option<Out> {
        self.rx.try_recv().ok()
    }
}
