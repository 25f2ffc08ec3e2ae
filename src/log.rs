//! Minimal leveled logging to stderr: one line per event, UTC timestamp,
//! level, area, peer, message. Cheap when the level is off (one atomic load).
//!
//! Logging never blocks the caller on I/O (a worker's media loop must not
//! wait for a slow terminal or a full pipe): the caller formats its line and
//! appends it to a bounded in-memory queue, and one logger thread writes the
//! queue to stderr. The lock around the queue is held only to push a line or
//! to swap the whole queue out, never while writing. When the queue holds
//! [`MAX_QUEUED_BYTES`], further lines are dropped and counted, and the
//! logger writes the count as a line of its own right after the lines it had
//! ("log: N lines dropped"). [`flush`] waits, for at most a few seconds, until
//! everything queued has been written (before an abort or exit).
//!
//! Every line is cut to [`MAX_LINE`] bytes (formatting stops there, so an
//! 8 MB argument costs no more than a short one), marked `…[cut]`. Strings a
//! peer chose (stream and app names, commands) go through [`peer_str`]:
//! quoted and escaped like `{:?}`, at most [`PEER_STR_CHARS`] characters.

use std::collections::VecDeque;
use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

/// Longest log line in bytes (before the cut marker and the newline).
pub const MAX_LINE: usize = 2048;
/// Most bytes of lines waiting for the logger thread; beyond it lines are dropped.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Most characters [`peer_str`] writes between its quotes.
pub const PEER_STR_CHARS: usize = 256;
/// How long [`flush`] waits for the logger thread at most.
const FLUSH_WAIT: Duration = Duration::from_secs(3);
const CUT_MARK: &str = " …[cut]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_level(l: Level) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

#[inline]
pub fn enabled(l: Level) -> bool {
    (l as u8) <= LEVEL.load(Ordering::Relaxed)
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Write one line. Use the macros.
pub fn write(l: Level, args: fmt::Arguments<'_>) {
    let line = format_line(&utc_now(), l, args);
    if !start_logger() {
        // No logger thread (it could not be spawned): write in place.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        return;
    }
    LOGGER.submit(line);
}

/// Wait until every line logged so far has reached stderr, for at most a
/// few seconds (before an abort or exit: the logger thread does not outlive
/// the process).
pub fn flush() {
    if LOGGER_RUNNING.load(Ordering::Acquire) {
        LOGGER.wait_idle(FLUSH_WAIT);
    }
    let _ = std::io::stderr().flush();
}

/// `ts LEVEL message\n`, the message cut to [`MAX_LINE`] bytes.
fn format_line(ts: &str, l: Level, args: fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(ts.len() + 96);
    line.push_str(ts);
    line.push(' ');
    line.push_str(level_name(l));
    line.push(' ');
    let mut w = Capped { s: &mut line, max: MAX_LINE, cut: false };
    let _ = fmt::write(&mut w, args);
    if w.cut {
        line.push_str(CUT_MARK);
    }
    line.push('\n');
    line
}

/// A `fmt::Write` that keeps the first `max` bytes (at a char boundary) and
/// then stops the formatting with an error.
struct Capped<'a> {
    s: &'a mut String,
    max: usize,
    cut: bool,
}

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, part: &str) -> fmt::Result {
        let room = self.max.saturating_sub(self.s.len());
        if part.len() <= room {
            self.s.push_str(part);
            return Ok(());
        }
        let mut end = room;
        while !part.is_char_boundary(end) {
            end -= 1;
        }
        self.s.push_str(part.get(..end).unwrap_or(""));
        self.cut = true;
        Err(fmt::Error)
    }
}

/// A string a peer chose, for a log line: see [`PeerStr`].
pub fn peer_str(s: &str) -> PeerStr<'_> {
    PeerStr(s)
}

/// Displays its string quoted and escaped as `{:?}` does, with at most
/// [`PEER_STR_CHARS`] characters between the quotes; a longer string is cut
/// at a character boundary and followed by `…(N bytes)` with its full length.
pub struct PeerStr<'a>(&'a str);

impl fmt::Display for PeerStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // `char::escape_debug` is never shorter than what `{:?}` writes for
        // the same char inside a string, so the prefix's Debug form fits.
        let mut used = 0;
        let mut end = s.len();
        for (i, c) in s.char_indices() {
            let n = c.escape_debug().len();
            if used + n > PEER_STR_CHARS {
                end = i;
                break;
            }
            used += n;
        }
        write!(f, "{:?}", s.get(..end).unwrap_or(""))?;
        if end < s.len() {
            write!(f, "…({} bytes)", s.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// ---------------------------------------------------------------------------
// The queue and the logger thread.

struct Pending {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
    /// The logger has taken lines it has not finished writing.
    writing: bool,
}

struct Logger {
    pending: Mutex<Pending>,
    /// Lines (or a drop count) arrived while the logger waited.
    wake: Condvar,
    /// The logger finished writing and found nothing more.
    idle: Condvar,
    max_bytes: usize,
}

static LOGGER: Logger = Logger::new(MAX_QUEUED_BYTES);
static LOGGER_START: Once = Once::new();
static LOGGER_RUNNING: AtomicBool = AtomicBool::new(false);

/// Start the logger thread once; `false` if it could not be started.
fn start_logger() -> bool {
    LOGGER_START.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("log".into())
            .spawn(|| LOGGER.run(&mut std::io::stderr()));
        LOGGER_RUNNING.store(spawned.is_ok(), Ordering::Release);
    });
    LOGGER_RUNNING.load(Ordering::Acquire)
}

impl Logger {
    const fn new(max_bytes: usize) -> Self {
        Logger {
            pending: Mutex::new(Pending { lines: VecDeque::new(), bytes: 0, dropped: 0, writing: false }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            max_bytes,
        }
    }

    /// The queue, even if a thread panicked while holding it (its state is
    /// always consistent between statements).
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a line, or drop and count it if the queue is full. Never waits
    /// for I/O; holds the lock for one push.
    fn submit(&self, line: String) {
        let mut p = self.lock();
        if p.bytes.saturating_add(line.len()) > self.max_bytes {
            p.dropped += 1;
            return;
        }
        let was_empty = p.lines.is_empty();
        p.bytes += line.len();
        p.lines.push_back(line);
        drop(p);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// The logger thread: take everything queued, write it, repeat.
    fn run(&self, sink: &mut dyn std::io::Write) {
        let mut batch = VecDeque::new();
        loop {
            let dropped = {
                let mut p = self.lock();
                p.writing = false;
                while p.lines.is_empty() && p.dropped == 0 {
                    self.idle.notify_all();
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::swap(&mut p.lines, &mut batch);
                p.bytes = 0;
                p.writing = true;
                std::mem::take(&mut p.dropped)
            };
            write_batch(sink, &mut batch, dropped);
        }
    }

    /// Wait until the queue is empty and written, or `limit` has passed.
    fn wait_idle(&self, limit: Duration) {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        let mut p = self.lock();
        while (p.writing || !p.lines.is_empty() || p.dropped > 0) && waited < limit {
            p = match self.idle.wait_timeout(p, step) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            waited += step;
        }
    }
}

/// Write `batch` (emptying it, keeping its capacity), then the drop notice.
fn write_batch(sink: &mut dyn std::io::Write, batch: &mut VecDeque<String>, dropped: u64) {
    for line in batch.drain(..) {
        let _ = sink.write_all(line.as_bytes());
    }
    if dropped > 0 {
        let notice = format_line(
            &utc_now(),
            Level::Warn,
            format_args!("log: {dropped} lines dropped (stderr did not keep up)"),
        );
        let _ = sink.write_all(notice.as_bytes());
    }
    let _ = sink.flush();
}

/// Wall-clock time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, proleptic Gregorian).
fn utc_now() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        d.subsec_millis()
    )
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) { $crate::log::write($lvl, format_args!($($arg)*)); }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }
#[macro_export]
macro_rules! trace { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Trace, $($arg)*) }; }

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};

    #[test]
    fn lines_are_cut_at_max_line() {
        let short = format_line("T", Level::Info, format_args!("rtmp {}: hello", 7));
        assert_eq!(short, "T INFO rtmp 7: hello\n");
        let name = "x".repeat(8 << 20);
        let line = format_line("T", Level::Warn, format_args!("stream {name} ended"));
        assert!(line.len() <= MAX_LINE + CUT_MARK.len() + 1, "{}", line.len());
        assert!(line.starts_with("T WARN stream xxx"));
        assert!(line.ends_with(" …[cut]\n"));
        // Cut at a character boundary.
        let wide = "é".repeat(MAX_LINE);
        let line = format_line("T", Level::Info, format_args!("{wide}"));
        assert!(line.ends_with("é …[cut]\n"), "{}", &line[line.len() - 20..]);
        // Exactly full is not cut.
        let fits = "y".repeat(MAX_LINE - "T INFO ".len());
        assert_eq!(format_line("T", Level::Info, format_args!("{fits}")), format!("T INFO {fits}\n"));
    }

    #[test]
    fn peer_strings_are_quoted_escaped_and_short() {
        assert_eq!(peer_str("cam1").to_string(), "\"cam1\"");
        for s in ["a\nb", "tab\there", "nul\0", "quote\"", "bell\u{7}", "ünï", "it's"] {
            assert_eq!(peer_str(s).to_string(), format!("{s:?}"));
        }
        let long = "n".repeat(8 << 20);
        let shown = peer_str(&long).to_string();
        assert_eq!(shown, format!("\"{}\"…(8388608 bytes)", "n".repeat(PEER_STR_CHARS)));
        // Escapes count: never more than PEER_STR_CHARS between the quotes.
        let nasty = "\u{1}\n".repeat(1000);
        let shown = peer_str(&nasty).to_string();
        let quoted = &shown[..shown.find('…').unwrap()];
        assert!(quoted.chars().count() <= PEER_STR_CHARS + 2, "{quoted}");
        assert!(shown.ends_with("…(2000 bytes)"));
        let exact = "k".repeat(PEER_STR_CHARS);
        assert_eq!(peer_str(&exact).to_string(), format!("{exact:?}"));
        // Multi-byte characters are never split.
        let wide = "€".repeat(1000);
        let shown = peer_str(&wide).to_string();
        assert!(shown.starts_with("\"€€€") && shown.ends_with("\"…(3000 bytes)"));
    }

    /// A sink whose writes wait while the test holds `gate`.
    struct Gated {
        gate: Arc<Mutex<()>>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Gated {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_stderr_never_blocks_the_caller() {
        let logger = Arc::new(Logger::new(10_000));
        let gate = Arc::new(Mutex::new(()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let closed = gate.lock().unwrap();
        {
            let (logger, mut sink) = (Arc::clone(&logger), Gated { gate: Arc::clone(&gate), out: Arc::clone(&out) });
            std::thread::spawn(move || logger.run(&mut sink));
        }
        // The logger takes the first line and then hangs writing it.
        logger.submit("first\n".into());
        while !logger.lock().writing {
            std::thread::yield_now();
        }
        // 100 000 more lines: all return at once; what does not fit is counted.
        let (done_tx, done_rx) = mpsc::channel();
        {
            let logger = Arc::clone(&logger);
            std::thread::spawn(move || {
                for i in 0..100_000 {
                    logger.submit(format!("line {i:05} {}\n", "p".repeat(80)));
                }
                let _ = done_tx.send(());
            });
        }
        done_rx.recv_timeout(Duration::from_secs(20)).expect("submit blocked behind the stuck writer");
        let (queued, dropped) = {
            let p = logger.lock();
            (p.lines.len(), p.dropped)
        };
        assert!(queued > 50 && queued < 200, "{queued} queued");
        assert_eq!(queued as u64 + dropped, 100_000);
        // Unstick: everything queued is written, then the drop count.
        drop(closed);
        logger.wait_idle(Duration::from_secs(10));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + queued + 1, "{}", &text[..200.min(text.len())]);
        assert_eq!(lines[0], "first");
        assert!(lines[1].starts_with("line 00000 "));
        let notice = lines[lines.len() - 1];
        assert!(notice.contains(&format!("WARN log: {dropped} lines dropped")), "{notice}");
        // And the logger carries on.
        logger.submit("after\n".into());
        logger.wait_idle(Duration::from_secs(10));
        assert!(String::from_utf8(out.lock().unwrap().clone()).unwrap().ends_with("after\n"));
    }

    #[test]
    fn the_global_logger_writes_and_flushes() {
        write(Level::Error, format_args!("log test line {}", peer_str("x\ny")));
        flush();
        assert!(LOGGER_RUNNING.load(Ordering::Acquire));
        let p = LOGGER.lock();
        assert!(p.lines.is_empty() && !p.writing);
    }
}
