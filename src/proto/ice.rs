//! ICE-lite agent for one WebRTC session (RFC 8445 §2.5 lite, RFC 7675 consent freshness).
//!
//! Implemented:
//! - Answering connectivity checks (RFC 8445 §7.3): USERNAME must be "LFRAG:RFRAG" with our
//!   ufrag first (the remote part is checked once known), MESSAGE-INTEGRITY keyed with our
//!   password, PRIORITY and ICE-CONTROLLING present. Failures answer 400 (missing
//!   attributes, no integrity), 401 (wrong username or integrity), 420 (unknown
//!   comprehension-required attributes, RFC 5389 §7.3.1) or 487 (the peer also claims the
//!   controlled role; a lite agent is always controlled, RFC 8445 §6.1.1). A bad
//!   FINGERPRINT, indications and responses are dropped without an answer.
//! - Valid remotes: every authenticated check records its source address (at most
//!   `MAX_VALID_REMOTES`, least recently seen evicted first).
//! - Nomination: USE-CANDIDATE selects the check's source address (so aggressive nomination,
//!   where every check carries it, works too); a later USE-CANDIDATE from another address
//!   switches to it (renomination, last one wins). Optionally the first valid check
//!   nominates when the peer never sends USE-CANDIDATE.
//! - Consent freshness (RFC 7675 §5.1): every valid check from the selected address
//!   refreshes consent; without one for `consent_timeout` (30 s) the agent is Disconnected.
//! - Connect timeout: no nomination within `connect_timeout` (15 s) of creation → Failed.
//!
//! Not implemented, deliberately: sending checks or keepalives (a lite agent never does,
//! RFC 8445 §2.5), the controlling role, candidate gathering and pairing, the NOMINATION
//! attribute of Chrome's renomination extension (last USE-CANDIDATE wins instead), ICE
//! restarts (a restart is a new agent with new credentials), and TCP candidates.
//! Disconnected and Failed are final.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{StunClass, StunError, StunMessage, StunMethod, StunWriter};

/// Consent expires after this long without a valid check. RFC 7675 §5.1.
pub const DEFAULT_CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Give up when nothing was nominated this long after creation. Browsers nominate within
/// a second or two on a working path; this bounds a session whose peer never arrives.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Remote addresses remembered as valid; past this the least recently seen is forgotten.
/// A browser has a handful of host/srflx candidates per family.
pub const MAX_VALID_REMOTES: usize = 8;
/// Events held until polled. Nominations coalesce (only the newest is kept) and the final
/// event happens once, so at most two are ever queued; the bound is a guard.
const MAX_EVENTS: usize = 4;

// Error codes. RFC 5389 §15.6, RFC 8445 §16.1.
const BAD_REQUEST: u16 = 400;
const UNAUTHORIZED: u16 = 401;
const UNKNOWN_ATTRIBUTE: u16 = 420;
const ROLE_CONFLICT: u16 = 487;

/// Fatal problems of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceError {
    /// The agent already reported Disconnected or Failed.
    Closed,
    /// Writing the answer failed (cannot happen with sane credentials).
    Encode(StunError),
}

impl fmt::Display for IceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IceError::Closed => f.write_str("ICE agent is closed (consent lost or connect timeout)"),
            IceError::Encode(e) => write!(f, "ICE answer could not be written: {e}"),
        }
    }
}

impl std::error::Error for IceError {}

/// Why a STUN message got no answer (the caller counts these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IceDrop {
    /// FINGERPRINT present but wrong. RFC 5389 §7.3.
    BadFingerprint,
    /// An indication (for example a Binding keepalive). RFC 5389 §7.3.2.
    Indication,
    /// A response: a lite agent sends no requests, so none is expected.
    Response,
}

/// What `IceLite::handle_stun` did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum IceAnswer {
    /// A success response was appended to `out`; the sender is a valid remote.
    Respond,
    /// A success response was appended to `out` and `remote` is now the selected address
    /// (first nomination or a switch). The same is queued as `IceEvent::Nominated`.
    Nominated { remote: SocketAddr },
    /// An error response with this code was appended to `out`.
    Rejected { code: u16 },
    /// Nothing was appended.
    Dropped(IceDrop),
}

/// State changes, drained with `IceLite::poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// Media and DTLS go to `remote` from now on.
    Nominated { remote: SocketAddr },
    /// Consent lost: no valid check from the selected address for `consent_timeout`.
    Disconnected,
    /// Nothing was nominated within `connect_timeout`.
    Failed,
}

/// Where the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceState {
    /// Waiting for a nomination.
    Checking,
    /// A remote address is selected and has consent.
    Connected,
    /// Consent expired (final).
    Disconnected,
    /// No nomination in time (final).
    Failed,
}

/// ICE-lite agent (always the controlled side) for one session.
pub struct IceLite {
    local_ufrag: String,
    local_pwd: String,
    remote_ufrag: Option<String>,
    remote_pwd: Option<String>,
    created: Instant,
    connect_timeout: Duration,
    consent_timeout: Duration,
    nominate_first_valid: bool,
    state: IceState,
    /// Selected remote and when it last proved consent.
    selected: Option<(SocketAddr, Instant)>,
    /// Addresses that sent authenticated checks, with when they last did.
    valid: Vec<(SocketAddr, Instant)>,
    events: VecDeque<IceEvent>,
}

impl fmt::Debug for IceLite {
    /// Passwords stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceLite")
            .field("local_ufrag", &self.local_ufrag)
            .field("remote_ufrag", &self.remote_ufrag)
            .field("state", &self.state)
            .field("selected", &self.selected)
            .field("valid", &self.valid)
            .finish_non_exhaustive()
    }
}

impl IceLite {
    /// A new agent with our credentials (from our SDP answer) and, if already known, the
    /// peer's (from its offer). `now` starts the connect timeout.
    pub fn new(
        local_ufrag: String,
        local_pwd: String,
        remote_ufrag: Option<String>,
        remote_pwd: Option<String>,
        now: Instant,
    ) -> Self {
        IceLite {
            local_ufrag,
            local_pwd,
            remote_ufrag,
            remote_pwd,
            created: now,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            consent_timeout: DEFAULT_CONSENT_TIMEOUT,
            nominate_first_valid: false,
            state: IceState::Checking,
            selected: None,
            valid: Vec::with_capacity(MAX_VALID_REMOTES),
            events: VecDeque::with_capacity(MAX_EVENTS),
        }
    }

    /// Learn the peer's ufrag and password (an offer or trickle that came late). From now
    /// on the remote part of USERNAME must match.
    pub fn set_remote_credentials(&mut self, ufrag: String, pwd: String) {
        self.remote_ufrag = Some(ufrag);
        self.remote_pwd = Some(pwd);
    }

    /// How long the selected address may go without a valid check. Default 30 s.
    pub fn set_consent_timeout(&mut self, timeout: Duration) {
        self.consent_timeout = timeout;
    }

    /// How long after creation a nomination may take. Default 15 s.
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        self.connect_timeout = timeout;
    }

    /// When set, the first valid check nominates its address even without USE-CANDIDATE
    /// (for peers that nominate aggressively but omit the attribute). Later switches still
    /// need USE-CANDIDATE. Default off.
    pub fn set_nominate_first_valid(&mut self, on: bool) {
        self.nominate_first_valid = on;
    }

    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    pub fn local_pwd(&self) -> &str {
        &self.local_pwd
    }

    pub fn remote_ufrag(&self) -> Option<&str> {
        self.remote_ufrag.as_deref()
    }

    pub fn remote_pwd(&self) -> Option<&str> {
        self.remote_pwd.as_deref()
    }

    pub fn state(&self) -> IceState {
        self.state
    }

    /// The nominated remote address (the newest one after a renomination).
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected.map(|(a, _)| a)
    }

    /// True if `addr` sent an authenticated check recently enough to be remembered.
    /// The shell may use this to accept DTLS/SRTP only from validated addresses.
    pub fn is_valid_remote(&self, addr: SocketAddr) -> bool {
        self.selected() == Some(addr) || self.valid.iter().any(|(a, _)| *a == addr)
    }

    /// Answer one STUN message that arrived from `from`; any answer is appended to `out`.
    ///
    /// Bad input never yields `Err`: it is answered with an error response or dropped (see
    /// `IceAnswer`). `Err(IceError::Closed)` means the agent already reported its end.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &StunMessage<'_>,
        out: &mut Vec<u8>,
    ) -> Result<IceAnswer, IceError> {
        if matches!(self.state, IceState::Disconnected | IceState::Failed) {
            return Err(IceError::Closed);
        }
        // RFC 5389 §7.3: a message whose FINGERPRINT fails is discarded silently.
        if msg.fingerprint().is_some() && !msg.verify_fingerprint() {
            return Ok(IceAnswer::Dropped(IceDrop::BadFingerprint));
        }
        match msg.class() {
            StunClass::Request => {}
            StunClass::Indication => return Ok(IceAnswer::Dropped(IceDrop::Indication)),
            StunClass::Success | StunClass::Error => return Ok(IceAnswer::Dropped(IceDrop::Response)),
        }
        if msg.method() != StunMethod::BINDING {
            return self.reject(out, msg, BAD_REQUEST, None);
        }
        // RFC 5389 §10.1.2: both USERNAME and MESSAGE-INTEGRITY, else 400 without integrity.
        let (Some(username), true) = (msg.username(), msg.has_message_integrity()) else {
            return self.reject(out, msg, BAD_REQUEST, None);
        };
        if !self.username_matches(username) || !msg.verify_integrity(self.local_pwd.as_bytes()) {
            return self.reject(out, msg, UNAUTHORIZED, None);
        }
        // Authenticated: error answers from here on carry MESSAGE-INTEGRITY (RFC 5389 §10.1.2).
        let key = Some(self.local_pwd.as_bytes());
        if msg.has_unknown_required() {
            return self.reject(out, msg, UNKNOWN_ATTRIBUTE, key);
        }
        if msg.ice_controlled().is_some() {
            // Both sides claim controlled; a lite agent cannot switch. RFC 8445 §7.3.1.1.
            return self.reject(out, msg, ROLE_CONFLICT, key);
        }
        if msg.ice_controlling().is_none() || msg.priority().is_none() {
            // RFC 8445 §7.1.1, §7.1.3: every check carries PRIORITY and a role.
            return self.reject(out, msg, BAD_REQUEST, key);
        }
        StunWriter::binding_success(out, msg.transaction_id(), from, self.local_pwd.as_bytes())
            .map_err(IceError::Encode)?;
        self.remember_valid(now, from);
        let selected = self.selected();
        if selected == Some(from) {
            // RFC 7675 §5.1: a valid check on the selected pair is consent.
            self.selected = Some((from, now));
            return Ok(IceAnswer::Respond);
        }
        let nominate = msg.use_candidate() || (self.nominate_first_valid && selected.is_none());
        if !nominate {
            return Ok(IceAnswer::Respond);
        }
        self.selected = Some((from, now));
        self.state = IceState::Connected;
        self.push_event(IceEvent::Nominated { remote: from });
        Ok(IceAnswer::Nominated { remote: from })
    }

    /// Next state change, if any. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next; `None` once the agent has ended (or when
    /// a timeout is so large that the deadline is not representable).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.state, self.selected) {
            (IceState::Checking, _) => self.created.checked_add(self.connect_timeout),
            (IceState::Connected, Some((_, seen))) => seen.checked_add(self.consent_timeout),
            _ => None,
        }
    }

    /// Fire whichever deadline `now` has reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else { return };
        if now < deadline {
            return;
        }
        match self.state {
            IceState::Checking => {
                self.state = IceState::Failed;
                self.push_event(IceEvent::Failed);
            }
            IceState::Connected => {
                self.state = IceState::Disconnected;
                self.push_event(IceEvent::Disconnected);
            }
            IceState::Disconnected | IceState::Failed => {}
        }
    }

    /// USERNAME of a check to us is "OURS:THEIRS" (RFC 8445 §7.2.2); THEIRS is checked
    /// only once the peer's ufrag is known.
    fn username_matches(&self, username: &str) -> bool {
        let Some((local, remote)) = username.split_once(':') else { return false };
        local == self.local_ufrag && self.remote_ufrag.as_deref().is_none_or(|r| r == remote)
    }

    fn reject(
        &self,
        out: &mut Vec<u8>,
        msg: &StunMessage<'_>,
        code: u16,
        key: Option<&[u8]>,
    ) -> Result<IceAnswer, IceError> {
        StunWriter::error_response(out, msg.method(), msg.transaction_id(), code, msg.unknown_required(), key)
            .map_err(IceError::Encode)?;
        Ok(IceAnswer::Rejected { code })
    }

    fn remember_valid(&mut self, now: Instant, from: SocketAddr) {
        if let Some(entry) = self.valid.iter_mut().find(|(a, _)| *a == from) {
            entry.1 = now;
            return;
        }
        if self.valid.len() >= MAX_VALID_REMOTES {
            // Forget the least recently seen address.
            if let Some(oldest) = self.valid.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i) {
                self.valid.swap_remove(oldest);
            }
        }
        self.valid.push((from, now));
    }

    fn push_event(&mut self, event: IceEvent) {
        if matches!(event, IceEvent::Nominated { .. }) {
            // Only the newest nomination matters to the caller.
            self.events.retain(|e| !matches!(e, IceEvent::Nominated { .. }));
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// Our ufrag from the USERNAME of a check ("OURS:THEIRS"), so the server can route the
/// request to its session before any address is known. `None` when USERNAME is missing,
/// not UTF-8 or has no colon.
pub fn username_local_part<'a>(msg: &StunMessage<'a>) -> Option<&'a str> {
    msg.username()?.split_once(':').map(|(local, _)| local)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::proto::stun::{self, StunBindingRequest, StunRole, ATTR_UNKNOWN_ATTRIBUTES};

    const LUFRAG: &str = "srv1";
    const LPWD: &str = "server-password-0123456789";
    const RUFRAG: &str = "brws";
    const RPWD: &str = "browser-password-987654321";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn agent(t0: Instant) -> IceLite {
        IceLite::new(LUFRAG.into(), LPWD.into(), Some(RUFRAG.into()), Some(RPWD.into()), t0)
    }

    /// A check as Chrome sends it: USERNAME, ICE-CONTROLLING, PRIORITY, MI, FINGERPRINT.
    fn check(tid: u8, username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let req = StunBindingRequest {
            username,
            priority: 2_122_260_223,
            role: StunRole::Controlling(0x1234_5678_9abc_def0),
            use_candidate,
        };
        StunWriter::binding_request(&mut out, [tid; 12], &req, pwd.as_bytes()).unwrap();
        out
    }

    fn good(tid: u8, use_candidate: bool) -> Vec<u8> {
        check(tid, &format!("{LUFRAG}:{RUFRAG}"), LPWD, use_candidate)
    }

    fn feed(ice: &mut IceLite, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut Vec<u8>) -> IceAnswer {
        out.clear();
        let msg = stun::parse(datagram).unwrap();
        ice.handle_stun(now, from, &msg, out).unwrap()
    }

    /// Parse an error answer and return its code.
    fn error_code(out: &[u8]) -> u16 {
        let m = stun::parse(out).unwrap();
        assert_eq!(m.class(), StunClass::Error);
        assert!(m.verify_fingerprint());
        m.error_code().unwrap().0
    }

    #[test]
    fn use_candidate_nominates_and_the_answer_is_a_valid_success() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, peer, &good(1, true), &mut out), IceAnswer::Nominated { remote: peer });
        assert_eq!(ice.poll_event(), Some(IceEvent::Nominated { remote: peer }));
        assert_eq!(ice.poll_event(), None);
        assert_eq!(ice.selected(), Some(peer));
        assert_eq!(ice.state(), IceState::Connected);
        assert!(ice.is_valid_remote(peer));

        let m = stun::parse(&out).unwrap();
        assert_eq!(m.class(), StunClass::Success);
        assert_eq!(m.transaction_id(), [1; 12]);
        assert_eq!(m.xor_mapped_address(), Some(peer));
        assert!(m.verify_integrity(LPWD.as_bytes()));
        assert!(m.verify_fingerprint());

        // The same address nominating again is consent, not a new nomination.
        assert_eq!(feed(&mut ice, t0, peer, &good(2, true), &mut out), IceAnswer::Respond);
        assert_eq!(ice.poll_event(), None);
    }

    #[test]
    fn check_without_use_candidate_only_validates() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("[2001:db8::7]:6000");
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, peer, &good(1, false), &mut out), IceAnswer::Respond);
        assert_eq!(stun::parse(&out).unwrap().xor_mapped_address(), Some(peer));
        assert_eq!(ice.selected(), None);
        assert_eq!(ice.poll_event(), None);
        assert!(ice.is_valid_remote(peer));
        assert!(!ice.is_valid_remote(addr("[2001:db8::8]:6000")));
        assert_eq!(ice.state(), IceState::Checking);
        let debug = format!("{ice:?}");
        assert!(debug.contains(LUFRAG) && !debug.contains(LPWD) && !debug.contains(RPWD));
    }

    #[test]
    fn nominate_first_valid_option() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        ice.set_nominate_first_valid(true);
        let (a, b) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, a, &good(1, false), &mut out), IceAnswer::Nominated { remote: a });
        // A later plain check from elsewhere does not steal the selection.
        assert_eq!(feed(&mut ice, t0, b, &good(2, false), &mut out), IceAnswer::Respond);
        assert_eq!(ice.selected(), Some(a));
    }

    #[test]
    fn bad_password_gets_401_and_no_nomination() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        let req = check(1, &format!("{LUFRAG}:{RUFRAG}"), "wrong-password", true);
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 401 });
        assert_eq!(error_code(&out), 401);
        // RFC 5389 §10.1.2: no MESSAGE-INTEGRITY on an authentication failure.
        assert!(!stun::parse(&out).unwrap().has_message_integrity());
        assert_eq!(ice.selected(), None);
        assert_eq!(ice.poll_event(), None);
        assert!(!ice.is_valid_remote(peer));
    }

    #[test]
    fn wrong_username_parts_get_401() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        for username in [format!("nope:{RUFRAG}"), format!("{LUFRAG}:nope"), LUFRAG.to_string(), String::new()] {
            let req = check(1, &username, LPWD, true);
            assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 401 }, "{username}");
        }
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn unknown_remote_ufrag_is_accepted_until_learned() {
        let t0 = crate::runtime::now();
        let mut ice = IceLite::new(LUFRAG.into(), LPWD.into(), None, None, t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        let any = check(1, &format!("{LUFRAG}:whatever"), LPWD, false);
        assert_eq!(feed(&mut ice, t0, peer, &any, &mut out), IceAnswer::Respond);
        ice.set_remote_credentials(RUFRAG.into(), RPWD.into());
        assert_eq!(ice.remote_ufrag(), Some(RUFRAG));
        assert_eq!(ice.remote_pwd(), Some(RPWD));
        assert_eq!(feed(&mut ice, t0, peer, &any, &mut out), IceAnswer::Rejected { code: 401 });
        assert_eq!(feed(&mut ice, t0, peer, &good(2, true), &mut out), IceAnswer::Nominated { remote: peer });
    }

    #[test]
    fn missing_attributes_get_400() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let username = format!("{LUFRAG}:{RUFRAG}");
        let mut out = Vec::new();

        // No MESSAGE-INTEGRITY: 400 without integrity.
        let mut req = Vec::new();
        let mut w = StunWriter::new(&mut req, StunClass::Request, StunMethod::BINDING, [1; 12]);
        w.username(&username).priority(1).ice_controlling(1).use_candidate();
        w.finish(None, true).unwrap();
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 400 });
        assert!(!stun::parse(&out).unwrap().has_message_integrity());

        // No USERNAME.
        let mut req = Vec::new();
        let mut w = StunWriter::new(&mut req, StunClass::Request, StunMethod::BINDING, [2; 12]);
        w.priority(1).ice_controlling(1);
        w.finish(Some(LPWD.as_bytes()), true).unwrap();
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 400 });

        // Authenticated but without PRIORITY or a role: 400 with integrity.
        for which in 0..2 {
            let mut req = Vec::new();
            let mut w = StunWriter::new(&mut req, StunClass::Request, StunMethod::BINDING, [3; 12]);
            w.username(&username).use_candidate();
            if which == 0 {
                w.priority(1);
            } else {
                w.ice_controlling(1);
            }
            w.finish(Some(LPWD.as_bytes()), true).unwrap();
            assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 400 });
            let m = stun::parse(&out).unwrap();
            assert!(m.verify_integrity(LPWD.as_bytes()));
        }

        // Another method.
        let mut req = Vec::new();
        let w = StunWriter::new(&mut req, StunClass::Request, StunMethod(0x003), [4; 12]);
        w.finish(None, true).unwrap();
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 400 });
        assert_eq!(stun::parse(&out).unwrap().method(), StunMethod(0x003));
        assert_eq!(ice.selected(), None);
        assert!(!ice.is_valid_remote(peer));
    }

    #[test]
    fn role_conflict_gets_487() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut req = Vec::new();
        let r = StunBindingRequest {
            username: &format!("{LUFRAG}:{RUFRAG}"),
            priority: 1,
            role: StunRole::Controlled(99),
            use_candidate: true,
        };
        StunWriter::binding_request(&mut req, [1; 12], &r, LPWD.as_bytes()).unwrap();
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 487 });
        assert_eq!(error_code(&out), 487);
        assert!(stun::parse(&out).unwrap().verify_integrity(LPWD.as_bytes()));
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn unknown_required_attribute_gets_420_listing_it() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut req = Vec::new();
        let mut w = StunWriter::new(&mut req, StunClass::Request, StunMethod::BINDING, [1; 12]);
        w.username(&format!("{LUFRAG}:{RUFRAG}")).priority(1).ice_controlling(1).attribute(0x0031, b"?");
        w.attribute(0xC057, b"optional is fine");
        w.finish(Some(LPWD.as_bytes()), true).unwrap();
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Rejected { code: 420 });
        let m = stun::parse(&out).unwrap();
        assert_eq!(m.error_code().unwrap().0, 420);
        let listed = m.attributes().find(|(t, _)| *t == ATTR_UNKNOWN_ATTRIBUTES).map(|(_, v)| v.to_vec());
        assert_eq!(listed, Some(vec![0x00, 0x31]));
    }

    #[test]
    fn bad_fingerprint_indications_and_responses_are_dropped_silently() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        let mut req = good(1, true);
        let n = req.len();
        req[n - 1] ^= 1;
        assert_eq!(feed(&mut ice, t0, peer, &req, &mut out), IceAnswer::Dropped(IceDrop::BadFingerprint));
        assert!(out.is_empty());

        let mut ind = Vec::new();
        StunWriter::new(&mut ind, StunClass::Indication, StunMethod::BINDING, [2; 12]).finish(None, true).unwrap();
        assert_eq!(feed(&mut ice, t0, peer, &ind, &mut out), IceAnswer::Dropped(IceDrop::Indication));
        let mut resp = Vec::new();
        StunWriter::binding_success(&mut resp, [3; 12], peer, LPWD.as_bytes()).unwrap();
        assert_eq!(feed(&mut ice, t0, peer, &resp, &mut out), IceAnswer::Dropped(IceDrop::Response));
        assert!(out.is_empty());
        assert_eq!(ice.selected(), None);
    }

    #[test]
    fn renomination_switches_to_the_newer_address() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let (wifi, lte) = (addr("192.0.2.1:5000"), addr("198.51.100.7:40000"));
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, wifi, &good(1, true), &mut out), IceAnswer::Nominated { remote: wifi });
        let t1 = t0 + Duration::from_secs(3);
        // A plain check from the new path does not switch.
        assert_eq!(feed(&mut ice, t1, lte, &good(2, false), &mut out), IceAnswer::Respond);
        assert_eq!(ice.selected(), Some(wifi));
        // USE-CANDIDATE from it does.
        assert_eq!(feed(&mut ice, t1, lte, &good(3, true), &mut out), IceAnswer::Nominated { remote: lte });
        assert_eq!(ice.selected(), Some(lte));
        // Events coalesce: only the newest nomination is pending.
        assert_eq!(ice.poll_event(), Some(IceEvent::Nominated { remote: lte }));
        assert_eq!(ice.poll_event(), None);
        assert!(ice.is_valid_remote(wifi));
        // And back again.
        assert_eq!(feed(&mut ice, t1, wifi, &good(4, true), &mut out), IceAnswer::Nominated { remote: wifi });
        assert_eq!(ice.poll_event(), Some(IceEvent::Nominated { remote: wifi }));
    }

    #[test]
    fn consent_expires_after_silence_in_virtual_time() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let other = addr("192.0.2.99:5000");
        let mut out = Vec::new();
        assert_eq!(feed(&mut ice, t0, peer, &good(1, true), &mut out), IceAnswer::Nominated { remote: peer });
        assert_eq!(ice.poll_event(), Some(IceEvent::Nominated { remote: peer }));
        assert_eq!(ice.poll_timeout(), Some(t0 + DEFAULT_CONSENT_TIMEOUT));

        // Checks from the selected address every 5 s keep consent alive for a minute.
        let mut now = t0;
        for i in 0..12u8 {
            now += Duration::from_secs(5);
            ice.handle_timeout(now);
            assert_eq!(feed(&mut ice, now, peer, &good(10 + i, false), &mut out), IceAnswer::Respond);
            assert_eq!(ice.poll_timeout(), Some(now + DEFAULT_CONSENT_TIMEOUT));
        }
        assert_eq!(ice.poll_event(), None);

        // Checks from another address are not consent for the selected one.
        let last = now;
        for i in 0..6u8 {
            now += Duration::from_secs(5);
            ice.handle_timeout(now);
            if ice.state() == IceState::Connected {
                assert_eq!(feed(&mut ice, now, other, &good(40 + i, false), &mut out), IceAnswer::Respond);
            }
        }
        let deadline = last + DEFAULT_CONSENT_TIMEOUT;
        assert!(now >= deadline);
        assert_eq!(ice.poll_event(), Some(IceEvent::Disconnected));
        assert_eq!(ice.poll_event(), None);
        assert_eq!(ice.state(), IceState::Disconnected);
        assert_eq!(ice.poll_timeout(), None);
        let msg_bytes = good(99, true);
        let msg = stun::parse(&msg_bytes).unwrap();
        assert_eq!(ice.handle_stun(now, peer, &msg, &mut out), Err(IceError::Closed));
    }

    #[test]
    fn consent_deadline_is_exact_and_configurable() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        ice.set_consent_timeout(Duration::from_secs(5));
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        let t1 = t0 + Duration::from_millis(300);
        let _ = feed(&mut ice, t1, peer, &good(1, true), &mut out);
        let deadline = ice.poll_timeout().unwrap();
        assert_eq!(deadline, t1 + Duration::from_secs(5));
        ice.handle_timeout(deadline - Duration::from_nanos(1));
        assert_eq!(ice.state(), IceState::Connected);
        let _ = ice.poll_event();
        ice.handle_timeout(deadline);
        assert_eq!(ice.poll_event(), Some(IceEvent::Disconnected));
        // Repeated timeouts emit nothing more.
        ice.handle_timeout(deadline + Duration::from_secs(100));
        assert_eq!(ice.poll_event(), None);
    }

    #[test]
    fn connect_timeout_fails_without_nomination() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = Vec::new();
        assert_eq!(ice.poll_timeout(), Some(t0 + DEFAULT_CONNECT_TIMEOUT));
        // Valid checks without nomination do not stop the connect timer.
        let _ = feed(&mut ice, t0 + Duration::from_secs(10), peer, &good(1, false), &mut out);
        assert_eq!(ice.poll_timeout(), Some(t0 + DEFAULT_CONNECT_TIMEOUT));
        ice.handle_timeout(t0 + Duration::from_secs(14));
        assert_eq!(ice.poll_event(), None);
        ice.handle_timeout(t0 + DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(ice.poll_event(), Some(IceEvent::Failed));
        assert_eq!(ice.state(), IceState::Failed);
        assert_eq!(ice.poll_timeout(), None);
        let msg_bytes = good(2, true);
        let msg = stun::parse(&msg_bytes).unwrap();
        assert_eq!(ice.handle_stun(t0 + DEFAULT_CONNECT_TIMEOUT, peer, &msg, &mut out), Err(IceError::Closed));
        assert!(!IceError::Closed.to_string().is_empty());
    }

    #[test]
    fn nomination_stops_the_connect_timer_and_huge_timeouts_do_not_overflow() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        ice.set_connect_timeout(Duration::from_secs(2));
        assert_eq!(ice.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        let _ = feed(&mut ice, t0 + Duration::from_secs(1), addr("192.0.2.1:1"), &good(1, true), &mut Vec::new());
        ice.handle_timeout(t0 + Duration::from_secs(3));
        assert_eq!(ice.state(), IceState::Connected);

        ice.set_consent_timeout(Duration::MAX);
        assert_eq!(ice.poll_timeout(), None);
        ice.handle_timeout(t0 + Duration::from_secs(1_000_000));
        assert_eq!(ice.state(), IceState::Connected);
    }

    #[test]
    fn valid_remotes_are_bounded() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let mut out = Vec::new();
        for i in 0..(MAX_VALID_REMOTES as u16 + 5) {
            let from = SocketAddr::new("192.0.2.1".parse().unwrap(), 1000 + i);
            let _ = feed(&mut ice, t0 + Duration::from_millis(u64::from(i)), from, &good(1, false), &mut out);
        }
        assert!(ice.valid.len() <= MAX_VALID_REMOTES);
        assert!(!ice.is_valid_remote(addr("192.0.2.1:1000")), "oldest forgotten");
        assert!(ice.is_valid_remote(SocketAddr::new("192.0.2.1".parse().unwrap(), 1000 + MAX_VALID_REMOTES as u16 + 4)));
    }

    #[test]
    fn answers_append_to_the_callers_buffer() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let peer = addr("192.0.2.1:5000");
        let mut out = vec![0xEE; 7];
        let req = good(1, true);
        let msg = stun::parse(&req).unwrap();
        let _ = ice.handle_stun(t0, peer, &msg, &mut out).unwrap();
        assert_eq!(&out[..7], &[0xEE; 7]);
        assert!(stun::parse(&out[7..]).is_ok());
    }

    #[test]
    fn username_local_part_routes_by_our_ufrag() {
        let req = good(1, false);
        assert_eq!(username_local_part(&stun::parse(&req).unwrap()), Some(LUFRAG));
        let no_colon = check(1, "justone", LPWD, false);
        assert_eq!(username_local_part(&stun::parse(&no_colon).unwrap()), None);
        let mut none = Vec::new();
        StunWriter::new(&mut none, StunClass::Request, StunMethod::BINDING, [0; 12]).finish(None, false).unwrap();
        assert_eq!(username_local_part(&stun::parse(&none).unwrap()), None);
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feed `datagram` if it parses; whatever is written must itself parse.
    fn fuzz_one(ice: &mut IceLite, now: Instant, datagram: &[u8]) {
        let Ok(msg) = stun::parse(datagram) else { return };
        let mut out = Vec::new();
        if let Ok(answer) = ice.handle_stun(now, addr("192.0.2.1:5000"), &msg, &mut out) {
            match answer {
                IceAnswer::Dropped(_) => assert!(out.is_empty()),
                _ => assert!(stun::parse(&out).is_ok()),
            }
        }
        while ice.poll_event().is_some() {}
    }

    #[test]
    fn every_prefix_and_random_bytes_never_panic() {
        let t0 = crate::runtime::now();
        let mut ice = agent(t0);
        let req = good(1, true);
        for n in 0..=req.len() {
            fuzz_one(&mut ice, t0, &req[..n]);
        }
        let mut rng = Rng(7);
        for round in 0..20_000u64 {
            let mut b = req.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            if round % 3 == 0 {
                b.truncate(rng.below(b.len() + 1));
            }
            fuzz_one(&mut ice, t0 + Duration::from_millis(round), &b);
            let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            fuzz_one(&mut ice, t0 + Duration::from_millis(round), &junk);
        }
    }
}
