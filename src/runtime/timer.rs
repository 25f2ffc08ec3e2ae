//! A hashed timer wheel per worker: O(1) insert, expiry in tick order.
//! Entries are never cancelled; the owner ignores stale ones (a connection
//! slot's generation changed, a grace window was superseded).
//!
//! Time is kept as a `u64` count of 5 ms ticks since the wheel's origin
//! (enough for 2.9 billion years), converted to and from `Instant` with
//! saturating arithmetic, so nothing wraps however long the process runs.
//! A deadline is rounded up to its tick (it never fires early). A deadline
//! already in the past when it is inserted fires on the next `expire`, and
//! `next_deadline` then says "now" exactly once: a past deadline can never
//! make the loop spin.

use std::time::{Duration, Instant};

const SLOTS: usize = 512;
const SLOTS_U64: u64 = SLOTS as u64;
/// Resolution: deadlines are rounded up to the next tick.
pub const TICK: Duration = Duration::from_millis(5);
const TICK_NANOS: u64 = 5_000_000;
const TICKS_PER_SEC: u64 = 1_000_000_000 / TICK_NANOS;
const _: () = assert!(TICK.as_nanos() == TICK_NANOS as u128 && 1_000_000_000 % TICK_NANOS == 0);

pub struct TimerWheel<T> {
    origin: Instant,
    /// All ticks before this one have been expired.
    cur: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// Inserted with a deadline whose tick had already been expired: due at
    /// the next `expire`.
    overdue: Vec<T>,
    len: usize,
}

impl<T> TimerWheel<T> {
    pub fn new(origin: Instant) -> Self {
        TimerWheel { origin, cur: 0, slots: (0..SLOTS).map(|_| Vec::new()).collect(), overdue: Vec::new(), len: 0 }
    }

    /// Ticks from the origin to `at`, rounded up; saturating.
    fn tick_ceil(&self, at: Instant) -> u64 {
        let n = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(n.div_ceil(u128::from(TICK_NANOS))).unwrap_or(u64::MAX)
    }

    /// Whole ticks from the origin to `now`: every tick up to this one is due.
    fn tick_floor(&self, now: Instant) -> u64 {
        let n = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(n / u128::from(TICK_NANOS)).unwrap_or(u64::MAX)
    }

    /// When tick `t` is reached; `None` if that is beyond what `Instant` holds
    /// (hundreds of billions of years: no deadline to sleep until).
    fn instant_of(&self, t: u64) -> Option<Instant> {
        let d = Duration::from_secs(t / TICKS_PER_SEC) + Duration::from_nanos((t % TICKS_PER_SEC) * TICK_NANOS);
        self.origin.checked_add(d)
    }

    pub fn insert(&mut self, at: Instant, v: T) {
        let t = self.tick_ceil(at);
        self.len += 1;
        if t < self.cur {
            self.overdue.push(v);
            return;
        }
        if let Some(slot) = self.slots.get_mut((t % SLOTS_U64) as usize) {
            slot.push((t, v));
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Earliest deadline, if any. Overdue entries give the last expired tick
    /// (a time at or before the `now` of the last `expire`): the caller does
    /// not sleep, and its next `expire` takes them.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if !self.overdue.is_empty() {
            return self.instant_of(self.cur.saturating_sub(1));
        }
        for d in 0..SLOTS_U64 {
            let Some(t) = self.cur.checked_add(d) else { break };
            if let Some(slot) = self.slots.get((t % SLOTS_U64) as usize) {
                if slot.iter().any(|(tt, _)| *tt == t) {
                    return self.instant_of(t);
                }
            }
        }
        // Everything is more than one revolution away.
        let t = self.slots.iter().flatten().map(|(t, _)| *t).min()?;
        self.instant_of(t)
    }

    /// Move every entry due at or before `now` into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<T>) {
        self.len -= self.overdue.len();
        out.append(&mut self.overdue);
        let target = self.tick_floor(now);
        if target < self.cur {
            return; // this tick was expired already
        }
        if self.len > 0 {
            let span = target - self.cur;
            if span >= SLOTS_U64 {
                // A whole revolution or more has passed: look at every entry once.
                for slot in &mut self.slots {
                    self.len -= take_due(slot, target, out);
                }
            } else {
                for d in 0..=span {
                    let t = self.cur + d;
                    if let Some(slot) = self.slots.get_mut((t % SLOTS_U64) as usize) {
                        self.len -= take_due(slot, target, out);
                    }
                }
            }
        }
        self.cur = target.saturating_add(1);
    }
}

/// Move the entries of `slot` due at or before tick `target` into `out`;
/// returns how many.
fn take_due<T>(slot: &mut Vec<(u64, T)>, target: u64, out: &mut Vec<T>) -> usize {
    let mut taken = 0;
    let mut i = 0;
    while i < slot.len() {
        if slot.get(i).is_some_and(|(tt, _)| *tt <= target) {
            let (_, v) = slot.swap_remove(i);
            out.push(v);
            taken += 1;
        } else {
            i += 1;
        }
    }
    taken
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn expires_in_order_and_reports_next_deadline() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        w.insert(t0 + Duration::from_millis(100), 1);
        w.insert(t0 + Duration::from_millis(10), 2);
        w.insert(t0 + Duration::from_secs(30), 3); // beyond one revolution
        let nd = w.next_deadline().unwrap();
        assert!(nd >= t0 + Duration::from_millis(10) && nd <= t0 + Duration::from_millis(15));
        let mut out = Vec::new();
        w.expire(t0 + Duration::from_millis(50), &mut out);
        assert_eq!(out, vec![2]);
        out.clear();
        w.expire(t0 + Duration::from_millis(100), &mut out);
        assert_eq!(out, vec![1]);
        out.clear();
        assert!(w.next_deadline().unwrap() >= t0 + Duration::from_secs(30));
        w.expire(t0 + Duration::from_secs(29), &mut out);
        assert!(out.is_empty());
        w.expire(t0 + Duration::from_secs(31), &mut out);
        assert_eq!(out, vec![3]);
        assert!(w.is_empty());
    }

    #[test]
    fn sound_after_years_of_uptime() {
        // 2^32 ticks of 5 ms is 248.5 days: the old arithmetic wrapped there.
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        for days in [1u32, 248, 249, 250, 500, 3650, 36_500] {
            let now = t0 + DAY * days;
            w.expire(now, &mut out);
            assert!(out.is_empty());
            w.insert(now + Duration::from_secs(5), days);
            let nd = w.next_deadline().unwrap();
            assert!(nd >= now + Duration::from_secs(5) && nd <= now + Duration::from_secs(5) + TICK, "{days} days: {:?}", nd - now);
            w.expire(now + Duration::from_millis(4999), &mut out);
            assert!(out.is_empty(), "{days} days: fired early");
            w.expire(nd, &mut out);
            assert_eq!(out, vec![days]);
            out.clear();
            assert_eq!(w.next_deadline(), None);
        }
    }

    #[test]
    fn a_past_deadline_fires_on_the_next_expire_and_never_spins() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        let now = t0 + DAY * 300;
        w.expire(now, &mut out);
        w.insert(t0 + Duration::from_secs(1), 'a'); // 300 days late
        w.insert(now, 'b'); // this very tick, already expired
        w.insert(now + DAY, 'c');
        assert_eq!(w.len(), 3);
        let nd = w.next_deadline().unwrap();
        assert!(nd <= now, "due now: {:?} ahead", nd - now);
        w.expire(now, &mut out);
        out.sort();
        assert_eq!(out, vec!['a', 'b']);
        out.clear();
        // Only the future deadline is left, and it is in the future.
        assert!(w.next_deadline().unwrap() >= now + DAY);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_loop_driven_by_next_deadline_never_spins() {
        // A worker loop: sleep until the next deadline, expire. Every wake-up
        // must expire something; deadlines spread over decades.
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = t0 + DAY * 240;
        for i in 0..2000u64 {
            let spread = [10, 1_000, 100_000, 10_000_000, 1_000_000_000_000][(i % 5) as usize];
            w.insert(now + Duration::from_millis(next() % spread), i);
        }
        let mut out = Vec::new();
        let mut fired = 0;
        while let Some(d) = w.next_deadline() {
            now = now.max(d);
            w.expire(now, &mut out);
            assert!(!out.is_empty(), "woke at {:?} for nothing", now - t0);
            fired += out.len();
            out.clear();
        }
        assert_eq!(fired, 2000);
    }

    #[test]
    fn huge_deadlines_saturate() {
        let t0 = Instant::now();
        let mut w = TimerWheel::new(t0);
        let mut out = Vec::new();
        for secs in [u64::MAX / 4, i64::MAX as u64 / 2, 1 << 40] {
            if let Some(at) = t0.checked_add(Duration::from_secs(secs)) {
                w.insert(at, secs);
            }
        }
        w.insert(t0 + DAY * 1000, 1);
        assert!(w.next_deadline().unwrap() >= t0 + DAY * 1000);
        w.expire(t0 + DAY * 2000, &mut out);
        assert_eq!(out, vec![1]);
        assert!(w.next_deadline().is_none_or(|d| d > t0 + DAY * 2000));
        // Before the origin counts as tick 0.
        let mut w = TimerWheel::new(t0 + DAY);
        w.insert(t0, 7);
        w.expire(t0, &mut out);
        assert_eq!(out, vec![1, 7]);
    }
}
