//! The stream registry: name → owner core, and which cores have players for
//! a name. The only state shared between cores; touched on publish,
//! unpublish, first play and last stop on a core, never per packet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::stats::StreamStats;

#[derive(Debug)]
struct Entry {
    owner: Option<usize>,
    /// The owner's publisher is live (media flows): until then the name is only
    /// claimed (refused to other publishers, not shown, not played).
    announced: bool,
    /// Bit i set: core i has at least one player for this name.
    interest: u64,
    stats: Arc<StreamStats>,
    source: &'static str,
}

#[derive(Default, Debug)]
pub struct Registry {
    inner: Mutex<HashMap<Arc<str>, Entry>>,
    /// Cluster mode: streams other live nodes own (name → node's RTMP URL), as the
    /// control thread last read them from the directory. Empty on a single node.
    remote: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

/// What a core learns when its first player for a name arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayLookup {
    /// Live on this core.
    Local,
    /// Live on another core: subscribe there.
    Remote(usize),
    /// Nobody publishes it (yet).
    Absent,
    /// Another node of the cluster publishes it: wait here for the pull.
    Elsewhere,
}

/// One row of `/api/streams`.
#[derive(Debug, Clone)]
pub struct StreamRow {
    pub name: Arc<str>,
    pub source: &'static str,
    pub stats: Arc<StreamStats>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        // A poisoned lock means another core panicked mid-update; the map is
        // still structurally sound, so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim `name` for a publisher on `core`. Returns the fresh stats and the
    /// other cores that already have players waiting, or `None` when the
    /// name is live elsewhere (BadName).
    pub fn claim(&self, name: &Arc<str>, core: usize, source: &'static str) -> Option<(Arc<StreamStats>, u64)> {
        // A name another node of the cluster publishes is taken (a pull of it is not
        // a publisher of its own).
        if source != "pull" && self.remote_url(name).is_some() {
            return None;
        }
        let mut map = self.lock();
        let e = map.entry(Arc::clone(name)).or_insert_with(|| Entry {
            owner: None,
            announced: false,
            interest: 0,
            stats: Arc::new(StreamStats::default()),
            source,
        });
        if e.owner.is_some() {
            return None;
        }
        // Same stats handle for the life of the entry (cores hold it for the
        // player count); the media counters start again for the new publisher.
        e.stats.reset_media();
        let stats = Arc::clone(&e.stats);
        e.owner = Some(core);
        e.announced = false;
        e.source = source;
        Some((stats, e.interest & !(1u64 << core)))
    }

    /// The claim of `core` goes live. Returns the other cores with players waiting now
    /// (they may have come since the claim).
    pub fn announce(&self, name: &str, core: usize) -> u64 {
        let mut map = self.lock();
        match map.get_mut(name) {
            Some(e) if e.owner == Some(core) => {
                e.announced = true;
                e.interest & !(1u64 << core)
            }
            _ => 0,
        }
    }

    /// The publisher on `core` is gone. Cores with players stay interested.
    pub fn release(&self, name: &str, core: usize) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(name) {
            if e.owner == Some(core) {
                e.owner = None;
                e.announced = false;
            }
            if e.owner.is_none() && e.interest == 0 {
                map.remove(name);
            }
        }
    }

    /// Core `core` got its first player for `name`. `register` is false in
    /// not-found mode for absent names (the player is refused, no interest).
    pub fn add_interest(&self, name: &Arc<str>, core: usize, register_if_absent: bool) -> (PlayLookup, Option<Arc<StreamStats>>) {
        let mut map = self.lock();
        match map.get_mut(name) {
            Some(e) => {
                e.interest |= 1u64 << core;
                let look = match e.owner {
                    _ if !e.announced => PlayLookup::Absent,
                    Some(o) if o == core => PlayLookup::Local,
                    Some(o) => PlayLookup::Remote(o),
                    None => PlayLookup::Absent,
                };
                (look, Some(Arc::clone(&e.stats)))
            }
            None if register_if_absent || self.remote_url(name).is_some() => {
                let stats = Arc::new(StreamStats::default());
                map.insert(Arc::clone(name), Entry { owner: None, announced: false, interest: 1u64 << core, stats: Arc::clone(&stats), source: "rtmp" });
                let look = if register_if_absent { PlayLookup::Absent } else { PlayLookup::Elsewhere };
                (look, Some(stats))
            }
            None => (PlayLookup::Absent, None),
        }
    }

    /// Is `name` live right now (for not-found mode)?
    pub fn is_live(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|e| e.owner.is_some() && e.announced)
    }

    /// Core `core` has no players left for `name`. Returns the owner to
    /// unsubscribe from, if it is another core.
    pub fn drop_interest(&self, name: &str, core: usize) -> Option<usize> {
        let mut map = self.lock();
        let e = map.get_mut(name)?;
        e.interest &= !(1u64 << core);
        let owner = e.owner;
        if owner.is_none() && e.interest == 0 {
            map.remove(name);
        }
        owner.filter(|&o| o != core)
    }

    /// The core that publishes `name` and what publishes it ("rtmp", "webrtc",
    /// "pull"), if it is live.
    pub fn publisher(&self, name: &str) -> Option<(usize, &'static str)> {
        self.lock().get(name).filter(|e| e.announced).and_then(|e| e.owner.map(|o| (o, e.source)))
    }

    /// Stats handle of a name, if known (players counting).
    pub fn stats(&self, name: &str) -> Option<Arc<StreamStats>> {
        self.lock().get(name).map(|e| Arc::clone(&e.stats))
    }

    /// Live streams, sorted by name.
    pub fn live(&self) -> Vec<StreamRow> {
        let map = self.lock();
        let mut rows: Vec<StreamRow> = map
            .iter()
            .filter(|(_, e)| e.owner.is_some() && e.announced)
            .map(|(k, e)| StreamRow { name: Arc::clone(k), source: e.source, stats: Arc::clone(&e.stats) })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// Cluster mode: replace the streams other nodes own.
    pub fn set_remote(&self, remote: HashMap<Arc<str>, Arc<str>>) {
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = remote;
    }

    /// The RTMP URL of the node that owns `name`, when another node does.
    pub fn remote_url(&self, name: &str) -> Option<Arc<str>> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Names with players waiting and no publisher here (cluster: pull candidates).
    pub fn waiting(&self) -> Vec<Arc<str>> {
        self.lock().iter().filter(|(_, e)| e.owner.is_none() && e.interest != 0).map(|(k, _)| Arc::clone(k)).collect()
    }

    /// Names published here by a cluster pull, with the core that pulls.
    pub fn pulls(&self) -> Vec<(Arc<str>, usize)> {
        self.lock().iter().filter(|(_, e)| e.source == "pull").filter_map(|(k, e)| e.owner.map(|o| (Arc::clone(k), o))).collect()
    }

    pub fn live_count(&self) -> usize {
        self.lock().values().filter(|e| e.owner.is_some() && e.announced).count()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn waiting_players_are_handed_to_the_publisher() {
        let r = Registry::default();
        let n: Arc<str> = "s".into();
        assert_eq!(r.add_interest(&n, 1, true).0, PlayLookup::Absent);
        let (_, waiting) = r.claim(&n, 0, "rtmp").unwrap();
        assert_eq!(waiting, 0b10);
        assert!(!r.is_live("s") && r.live().is_empty(), "claimed, not announced: not listed");
        assert_eq!(r.add_interest(&n, 2, true).0, PlayLookup::Absent, "not played before it is announced");
        assert_eq!(r.announce("s", 0), 0b110, "players that came after the claim are started too");
        assert!(r.is_live("s"));
        assert_eq!(r.drop_interest("s", 2), Some(0));
        assert!(r.claim(&n, 1, "rtmp").is_none(), "second publisher refused");
        assert_eq!(r.add_interest(&n, 0, true).0, PlayLookup::Local);
        r.release(&n, 0);
        assert!(!r.is_live("s"));
        assert_eq!(r.drop_interest("s", 1), None);
        assert_eq!(r.drop_interest("s", 0), None);
        assert!(r.stats("s").is_none(), "entry removed when nobody cares");
    }

    #[test]
    fn remote_owner_is_reported_for_unsubscribe() {
        let r = Registry::default();
        let n: Arc<str> = "s".into();
        r.claim(&n, 0, "rtmp").unwrap();
        assert_eq!(r.announce("s", 0), 0);
        assert_eq!(r.add_interest(&n, 1, true).0, PlayLookup::Remote(0));
        assert_eq!(r.drop_interest("s", 1), Some(0));
    }
}
