//! The mesh: one bounded lock-free SPSC ring from every worker to every other
//! worker, and one `mio::Waker` per worker, rung at most once per loop turn.

use std::collections::VecDeque;
use std::sync::Arc;

pub use crate::relay::CoreMsg;

/// Messages per ring. At ~100 messages/s per stream this is many seconds of
/// a stalled core; beyond it media is dropped (counted), control is kept.
pub const RING_CAPACITY: usize = 8192;

pub struct Mesh {
    id: usize,
    tx: Vec<Option<rtrb::Producer<CoreMsg>>>,
    rx: Vec<Option<rtrb::Consumer<CoreMsg>>>,
    /// Control messages that found their ring full, retried each turn.
    backlog: Vec<VecDeque<CoreMsg>>,
    wakers: Arc<Vec<Arc<mio::Waker>>>,
    /// Bit j: worker j has new messages from us this turn.
    ring: u64,
}

/// Build the full mesh for `n` workers: `rings[i][j]` carries i → j.
pub fn build(n: usize, wakers: Arc<Vec<Arc<mio::Waker>>>) -> Vec<Mesh> {
    let mut meshes: Vec<Mesh> = (0..n)
        .map(|id| Mesh {
            id,
            tx: (0..n).map(|_| None).collect(),
            rx: (0..n).map(|_| None).collect(),
            backlog: (0..n).map(|_| VecDeque::new()).collect(),
            wakers: Arc::clone(&wakers),
            ring: 0,
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (p, c) = rtrb::RingBuffer::new(RING_CAPACITY);
            if let Some(slot) = meshes.get_mut(i).and_then(|m| m.tx.get_mut(j)) {
                *slot = Some(p);
            }
            if let Some(slot) = meshes.get_mut(j).and_then(|m| m.rx.get_mut(i)) {
                *slot = Some(c);
            }
        }
    }
    meshes
}

impl Mesh {
    pub fn id(&self) -> usize {
        self.id
    }

    /// Send to worker `to`. Returns false if a media message was dropped
    /// because the ring is full.
    pub fn send(&mut self, to: usize, msg: CoreMsg) -> bool {
        let Some(Some(p)) = self.tx.get_mut(to) else { return true };
        self.ring |= 1u64 << to;
        let backlog = self.backlog.get_mut(to);
        if let Some(b) = backlog {
            if !b.is_empty() {
                if msg.is_media() {
                    return false;
                }
                b.push_back(msg);
                return true;
            }
            match p.push(msg) {
                Ok(()) => true,
                Err(rtrb::PushError::Full(m)) => {
                    if m.is_media() {
                        false
                    } else {
                        b.push_back(m);
                        true
                    }
                }
            }
        } else {
            true
        }
    }

    /// Retry backlogged control messages and ring the doorbells of the workers
    /// we sent to this turn: at most one wake per worker per turn.
    pub fn flush(&mut self) {
        for (j, b) in self.backlog.iter_mut().enumerate() {
            while let Some(m) = b.pop_front() {
                let Some(Some(p)) = self.tx.get_mut(j) else { break };
                match p.push(m) {
                    Ok(()) => {}
                    Err(rtrb::PushError::Full(m)) => {
                        b.push_front(m);
                        break;
                    }
                }
            }
        }
        let mut mask = std::mem::take(&mut self.ring);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(w) = self.wakers.get(j) {
                let _ = w.wake();
            }
        }
    }

    /// Take up to `budget` messages from the other workers.
    pub fn drain(&mut self, budget: usize, out: &mut Vec<CoreMsg>) -> bool {
        let mut more = false;
        for c in self.rx.iter_mut().flatten() {
            let mut n = 0;
            while n < budget {
                match c.pop() {
                    Ok(m) => {
                        out.push(m);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            if n == budget && !c.is_empty() {
                more = true;
            }
        }
        more
    }
}
