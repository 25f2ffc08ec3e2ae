//! Budgets shared by every worker, in all and per source address: the TCP connections
//! each listener holds, the WebRTC sessions waiting to connect. Touched when something
//! is admitted or leaves, never per packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The listeners that take TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    Rtmp,
    Http,
    Https,
    Rtmps,
}

impl ListenerKind {
    pub const ALL: [ListenerKind; 4] = [ListenerKind::Rtmp, ListenerKind::Http, ListenerKind::Https, ListenerKind::Rtmps];

    pub fn label(self) -> &'static str {
        match self {
            ListenerKind::Rtmp => "rtmp",
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Rtmps => "rtmps",
        }
    }
}

/// Why something was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The budget is spent (e.g. the listener holds `--max-conns` connections).
    Total,
    /// This address spent its share (e.g. `--max-conns-per-ip`).
    PerIp,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Live counts per key (a listener; or `()` for one budget), in all and per address.
#[derive(Debug)]
pub struct AddrBudget<K> {
    max_total: usize,
    /// 0: no per-address limit.
    max_per_ip: usize,
    counts: Mutex<HashMap<K, Counts>>,
}

/// TCP connections per listener (`--max-conns`, `--max-conns-per-ip`).
pub type ConnLimits = AddrBudget<ListenerKind>;

impl<K: std::hash::Hash + Eq + Copy> AddrBudget<K> {
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        AddrBudget { max_total, max_per_ip, counts: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Counts>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a slot for something new from `ip`, or say why not.
    pub fn admit(&self, kind: K, ip: IpAddr) -> Result<(), Refusal> {
        let mut m = self.lock();
        let c = m.entry(kind).or_default();
        if c.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *n >= self.max_per_ip {
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
            return Err(Refusal::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(())
    }

    /// Something admitted earlier has left.
    pub fn release(&self, kind: K, ip: IpAddr) {
        let mut m = self.lock();
        let Some(c) = m.get_mut(&kind) else { return };
        // Every admitted connection counts under its address: a release without one
        // (a double release) changes nothing.
        let Some(n) = c.per_ip.get_mut(&ip) else { return };
        *n = n.saturating_sub(1);
        if *n == 0 {
            c.per_ip.remove(&ip);
        }
        c.total = c.total.saturating_sub(1);
    }

    /// How many are held now.
    pub fn current(&self, kind: K) -> usize {
        self.lock().get(&kind).map_or(0, |c| c.total)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_address_budgets() {
        let l = ConnLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(l.admit(ListenerKind::Rtmp, a), Ok(()));
        assert_eq!(l.admit(ListenerKind::Rtmp, a), Ok(()));
        assert_eq!(l.admit(ListenerKind::Rtmp, a), Err(Refusal::PerIp));
        assert_eq!(l.admit(ListenerKind::Http, a), Ok(()), "budgets are per listener");
        assert_eq!(l.admit(ListenerKind::Rtmp, b), Ok(()));
        assert_eq!(l.admit(ListenerKind::Rtmp, b), Err(Refusal::Total));
        l.release(ListenerKind::Rtmp, a);
        assert_eq!(l.admit(ListenerKind::Rtmp, b), Ok(()));
        assert_eq!(l.current(ListenerKind::Rtmp), 3);
        l.release(ListenerKind::Rtmp, b);
        l.release(ListenerKind::Rtmp, b);
        l.release(ListenerKind::Rtmp, b);
        assert_eq!(l.current(ListenerKind::Rtmp), 1, "never below what was admitted");
        let unlimited = ConnLimits::new(10, 0);
        for _ in 0..10 {
            assert_eq!(unlimited.admit(ListenerKind::Rtmp, a), Ok(()));
        }
    }
}
