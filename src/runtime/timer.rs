//! A hashed timer wheel per worker: O(1) insert, expiry in tick order.
//! Entries are never cancelled; the owner ignores stale ones (a connection
//! slot's generation changed, a grace window was superseded).

use std::time::{Duration, Instant};

const SLOTS: usize = 512;
/// Resolution: deadlines are rounded up to the next tick.
pub const TICK: Duration = Duration::from_millis(5);

pub struct TimerWheel<T> {
    origin: Instant,
    /// All ticks before this one have been expired.
    cur: u64,
    slots: Vec<Vec<(u64, T)>>,
    len: usize,
}

impl<T> TimerWheel<T> {
    pub fn new(origin: Instant) -> Self {
        TimerWheel { origin, cur: 0, slots: (0..SLOTS).map(|_| Vec::new()).collect(), len: 0 }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        d.as_nanos().div_ceil(TICK.as_nanos()) as u64
    }

    pub fn insert(&mut self, at: Instant, v: T) {
        let t = self.tick_of(at).max(self.cur);
        if let Some(slot) = self.slots.get_mut((t % SLOTS as u64) as usize) {
            slot.push((t, v));
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        for d in 0..SLOTS as u64 {
            let t = self.cur + d;
            if let Some(slot) = self.slots.get((t % SLOTS as u64) as usize) {
                if slot.iter().any(|(tt, _)| *tt == t) {
                    return Some(self.origin + TICK * t as u32);
                }
            }
        }
        // Everything is more than one revolution away.
        let t = self.slots.iter().flatten().map(|(t, _)| *t).min()?;
        Some(self.origin + TICK * t as u32)
    }

    /// Move every entry due at or before `now` into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<T>) {
        let target = self.tick_of(now + Duration::from_nanos(1)).saturating_sub(1);
        if self.len == 0 {
            self.cur = self.cur.max(target + 1);
            return;
        }
        // Visit at most one revolution of slots; entries further out stay.
        let last = target.min(self.cur + SLOTS as u64 - 1);
        let mut t = self.cur;
        while t <= last {
            if let Some(slot) = self.slots.get_mut((t % SLOTS as u64) as usize) {
                let mut i = 0;
                while i < slot.len() {
                    if slot.get(i).is_some_and(|(tt, _)| *tt <= target) {
                        let (_, v) = slot.swap_remove(i);
                        out.push(v);
                        self.len -= 1;
                    } else {
                        i += 1;
                    }
                }
            }
            t += 1;
        }
        if target >= self.cur + SLOTS as u64 {
            // We skipped past whole revolutions: sweep everything once.
            for slot in &mut self.slots {
                let mut i = 0;
                while i < slot.len() {
                    if slot.get(i).is_some_and(|(tt, _)| *tt <= target) {
                        let (_, v) = slot.swap_remove(i);
                        out.push(v);
                        self.len -= 1;
                    } else {
                        i += 1;
                    }
                }
            }
        }
        self.cur = target + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
