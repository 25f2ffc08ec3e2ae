//! Test builds only: a global allocator that forwards every call to the
//! system allocator and, while [`peak_bytes`] runs on a thread, counts the
//! bytes that thread allocates and frees. Tests use it to prove a decoder's
//! memory is bounded by its input ("refuses before allocating more than…"),
//! not only that it returns the right error.
//!
//! Counters are per thread, so tests running in parallel do not see each
//! other. Memory freed by another thread than the one that allocated it is
//! not attributed correctly; the measured closures do not do that.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Meter;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Record `delta` bytes on this thread if metering is on. Touches only
/// const-initialised thread-locals without destructors: never allocates,
/// never panics (`try_with` also covers a thread being torn down).
fn note(delta: isize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| {
                let now = live.get().saturating_add(delta);
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
        }
    });
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every method passes its arguments unchanged to `System` and returns
// what `System` returned, so the caller's guarantees (a non-zero-size layout,
// a pointer from this allocator with its layout) are exactly the guarantees
// `System` needs; the bookkeeping in `note` neither allocates nor unwinds.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged, see the impl.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(signed(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged, see the impl.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(signed(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged, see the impl.
        unsafe { System.dealloc(ptr, layout) };
        note(-signed(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged, see the impl.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(signed(new_size).saturating_sub(signed(layout.size())));
        }
        p
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Run `f` on this thread and return its result with the peak number of
/// bytes it had allocated and not yet freed at any moment (what it returns
/// included, until it is dropped by the caller).
pub(crate) fn peak_bytes<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    let peak = PEAK.with(Cell::get);
    (r, usize::try_from(peak).unwrap_or(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_closure_allocates() {
        let (v, peak) = peak_bytes(|| vec![0u8; 100_000]);
        assert_eq!(v.len(), 100_000);
        assert!((100_000..110_000).contains(&peak), "{peak}");
        // Freed inside: the peak still shows it.
        let ((), peak) = peak_bytes(|| drop(std::hint::black_box(vec![1u64; 1000])));
        assert!(peak >= 8000, "{peak}");
        let ((), peak) = peak_bytes(|| {});
        assert!(peak < 1000, "{peak}");
    }
}
