//! DTLS-SRTP for WebRTC ingest (RFC 5763, RFC 5764), behind a small type of
//! ours so the engine (dimpl, sans-IO) can be swapped without touching the
//! rest of the media path.
//!
//! We are always the DTLS server (`a=setup:passive`): the browser starts the
//! handshake. The peer's certificate must hash to the fingerprint its SDP
//! announced (RFC 8122 §5); a mismatch ends the session. On success the
//! exported keying material is split into the client (browser → us) and
//! server (us → browser) SRTP master keys and salts (RFC 5764 §4.2).
//!
//! Every call into the engine runs under `catch_unwind`: the engine parses
//! unauthenticated datagrams and has hundreds of `unwrap`/`expect`/index
//! sites, and the runtime aborts the whole process on a worker panic, so one
//! bad datagram hitting an engine bug would otherwise end every stream on
//! the server. A caught panic is counted in [`ENGINE_PANICS`] and fails only
//! its own session ([`DtlsError::EnginePanicked`], for every later call too).
//! (The panic hook still prints the panic once to stderr.)

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Panics caught inside the DTLS engine since the process started; each one
/// failed its session only. For the shell's metrics.
pub static ENGINE_PANICS: AtomicU64 = AtomicU64::new(0);

use sha2::{Digest, Sha256};

/// Our certificate, created once per process and shared by every session.
#[derive(Clone)]
pub struct DtlsIdentity {
    cert: Arc<dimpl::DtlsCertificate>,
    config: Arc<dimpl::Config>,
    /// `sha-256 AA:BB:...` value for `a=fingerprint`.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsError {
    Certificate(&'static str),
    /// The engine reported a fatal error (handshake failure, alert).
    Handshake(String),
    /// The peer certificate does not match the SDP fingerprint.
    FingerprintMismatch,
    /// No SRTP profile was negotiated or its keying material is short.
    NoSrtp,
    /// The engine panicked (a bug in the DTLS library); the session is dead.
    EnginePanicked,
}

impl std::fmt::Display for DtlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsError::Certificate(s) => write!(f, "DTLS certificate: {s}"),
            DtlsError::Handshake(s) => write!(f, "DTLS handshake failed: {s}"),
            DtlsError::FingerprintMismatch => f.write_str("DTLS peer certificate does not match the SDP fingerprint"),
            DtlsError::NoSrtp => f.write_str("DTLS finished without an SRTP profile"),
            DtlsError::EnginePanicked => f.write_str("DTLS engine panicked (a bug in the DTLS library): session closed"),
        }
    }
}

impl DtlsIdentity {
    /// Generate a fresh self-signed ECDSA P-256 certificate.
    pub fn generate() -> Result<Self, DtlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| DtlsError::Certificate("key generation failed"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|_| DtlsError::Certificate("bad parameters"))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "rtcbridge");
        let cert = params.self_signed(&key).map_err(|_| DtlsError::Certificate("self-signing failed"))?;
        let der = cert.der().to_vec();
        let fingerprint = format_fingerprint(&Sha256::digest(&der));
        // RustCrypto, named rather than left to feature order: a build that also turns on
        // dimpl's aws-lc-rs (str0m in our dev-dependencies does) would otherwise prefer it.
        let config = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .require_client_certificate(true)
            .build()
            .map_err(|_| DtlsError::Certificate("DTLS config rejected"))?;
        Ok(DtlsIdentity {
            cert: Arc::new(dimpl::DtlsCertificate { certificate: der, private_key: key.serialize_der() }),
            config: Arc::new(config),
            fingerprint,
        })
    }
}

/// `AA:BB:...` upper-case hex, as SDP writes it.
pub fn format_fingerprint(d: &[u8]) -> String {
    let mut s = String::with_capacity(d.len() * 3);
    for (i, b) in d.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// SRTP protection profile agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpSuite {
    Aes128CmSha1_80,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl SrtpSuite {
    /// (master key, master salt) lengths, RFC 5764 §4.1.2 and RFC 7714 §12.
    pub fn key_salt_len(self) -> (usize, usize) {
        match self {
            SrtpSuite::Aes128CmSha1_80 => (16, 14),
            SrtpSuite::AeadAes128Gcm => (16, 12),
            SrtpSuite::AeadAes256Gcm => (32, 12),
        }
    }
}

/// Keys for both directions.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    /// Browser → us (the DTLS client's write key).
    pub remote_key: Vec<u8>,
    pub remote_salt: Vec<u8>,
    /// Us → browser.
    pub local_key: Vec<u8>,
    pub local_salt: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpKeys({:?})", self.suite)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DtlsEvent {
    /// Handshake done, fingerprint verified, keys exported.
    Connected(SrtpKeys),
    /// The peer closed the association (close_notify).
    Closed,
}

/// One DTLS association (server role).
pub struct DtlsServer {
    dtls: dimpl::Dtls,
    /// Expected peer fingerprint (sha-256 bytes) from the offer.
    expected: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
    timeout: Option<Instant>,
    peer_ok: bool,
    keys: Option<SrtpKeys>,
    connected: bool,
    buf: Vec<u8>,
    /// The engine panicked: every later call fails.
    panicked: bool,
}

/// One engine output, copied out of the engine's buffer inside the guard.
enum Polled {
    Packet(Vec<u8>),
    BufferTooSmall(usize),
    Timeout(Instant),
    Connected,
    /// SHA-256 of the peer's certificate.
    PeerCert(Vec<u8>),
    KeyingMaterial(Vec<u8>, Option<SrtpSuite>),
    CloseNotify,
    Other,
}

/// Run `f` on the engine unless it panicked before; a panic now marks it dead.
fn guarded<E, R>(engine: &mut E, panicked: &mut bool, f: impl FnOnce(&mut E) -> R) -> Result<R, DtlsError> {
    if *panicked {
        return Err(DtlsError::EnginePanicked);
    }
    match catch_unwind(AssertUnwindSafe(|| f(engine))) {
        Ok(r) => Ok(r),
        Err(_) => {
            *panicked = true;
            ENGINE_PANICS.fetch_add(1, Ordering::Relaxed);
            Err(DtlsError::EnginePanicked)
        }
    }
}

impl DtlsServer {
    /// `expected_sha256` is the remote `a=fingerprint:sha-256` value as bytes.
    pub fn new(id: &DtlsIdentity, expected_sha256: Vec<u8>, now: Instant) -> Self {
        let mut dtls = dimpl::Dtls::new_12(Arc::clone(&id.config), (*id.cert).clone(), now);
        // The engine seeds its handshake randoms in its first timeout: give it one now.
        let mut panicked = false;
        let _ = guarded(&mut dtls, &mut panicked, |d| d.handle_timeout(now));
        let mut s = DtlsServer {
            dtls,
            expected: expected_sha256,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            timeout: None,
            peer_ok: false,
            keys: None,
            connected: false,
            buf: vec![0u8; 2048],
            panicked,
        };
        let _ = s.drain();
        s
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Feed one DTLS datagram. `Err` is fatal for the session.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        guarded(&mut self.dtls, &mut self.panicked, |d| d.handle_packet(data))?
            .map_err(|e| DtlsError::Handshake(e.to_string()))?;
        self.drain()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        if self.timeout.is_some_and(|t| t <= now) {
            guarded(&mut self.dtls, &mut self.panicked, |d| d.handle_timeout(now))?
                .map_err(|e| DtlsError::Handshake(e.to_string()))?;
            self.drain()?;
        }
        Ok(())
    }

    /// The next engine output, copied out of `buf` inside the guard.
    fn poll_engine(&mut self) -> Result<Polled, DtlsError> {
        let buf = &mut self.buf;
        guarded(&mut self.dtls, &mut self.panicked, |d| match d.poll_output(buf) {
            dimpl::Output::Packet(p) => Polled::Packet(p.to_vec()),
            dimpl::Output::BufferTooSmall { needed } => Polled::BufferTooSmall(needed),
            dimpl::Output::Timeout(t) => Polled::Timeout(t),
            dimpl::Output::Connected => Polled::Connected,
            dimpl::Output::PeerCert(der) => Polled::PeerCert(Sha256::digest(der).to_vec()),
            dimpl::Output::KeyingMaterial(km, profile) => {
                let suite = match profile {
                    dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(SrtpSuite::Aes128CmSha1_80),
                    dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(SrtpSuite::AeadAes128Gcm),
                    dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(SrtpSuite::AeadAes256Gcm),
                    _ => None,
                };
                Polled::KeyingMaterial(km.to_vec(), suite)
            }
            dimpl::Output::CloseNotify => Polled::CloseNotify,
            _ => Polled::Other,
        })
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.connected { None } else { self.timeout }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    fn drain(&mut self) -> Result<(), DtlsError> {
        loop {
            match self.poll_engine()? {
                // At most 64 queued datagrams (a whole flight); beyond that drop: DTLS retransmits.
                Polled::Packet(p) if self.transmit.len() < 64 => self.transmit.push_back(p),
                Polled::Packet(_) => {}
                Polled::BufferTooSmall(needed) => {
                    if needed > 1 << 16 {
                        return Err(DtlsError::Handshake("engine asked for an oversized buffer".into()));
                    }
                    self.buf.resize(needed, 0);
                }
                Polled::Timeout(t) => {
                    self.timeout = Some(t);
                    break;
                }
                Polled::Connected => self.connected = true,
                Polled::PeerCert(got) => {
                    if got != self.expected {
                        return Err(DtlsError::FingerprintMismatch);
                    }
                    self.peer_ok = true;
                }
                Polled::KeyingMaterial(km, suite) => {
                    let suite = suite.ok_or(DtlsError::NoSrtp)?;
                    self.keys = Some(split_keys(suite, &km)?);
                }
                Polled::CloseNotify => self.events.push_back(DtlsEvent::Closed),
                Polled::Other => {}
            }
        }
        if self.connected {
            if let Some(keys) = self.keys.take() {
                if !self.peer_ok {
                    return Err(DtlsError::FingerprintMismatch);
                }
                self.events.push_back(DtlsEvent::Connected(keys));
            }
        }
        Ok(())
    }
}

/// The browser's side of a handshake, for tests and the fuzzer (they need a
/// real peer to reach the states after the ClientHello); not used by the
/// server.
#[doc(hidden)]
pub struct DtlsTestClient {
    dtls: dimpl::Dtls,
    buf: Vec<u8>,
    /// Keying material the client exported when its handshake finished.
    pub keying_material: Option<Vec<u8>>,
}

impl DtlsTestClient {
    pub fn new(id: &DtlsIdentity, now: Instant) -> Self {
        let mut dtls = dimpl::Dtls::new_12(Arc::clone(&id.config), (*id.cert).clone(), now);
        dtls.set_active(true);
        let _ = dtls.handle_timeout(now);
        DtlsTestClient { dtls, buf: vec![0u8; 4096], keying_material: None }
    }

    pub fn handle_datagram(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        self.dtls.handle_packet(data).map_err(|e| DtlsError::Handshake(e.to_string()))
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        self.dtls.handle_timeout(now).map_err(|e| DtlsError::Handshake(e.to_string()))
    }

    /// Every datagram the client wants to send now.
    pub fn poll_datagrams(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        // A client flight is a handful of datagrams; the bound only guards the loop.
        for _ in 0..64 {
            match self.dtls.poll_output(&mut self.buf) {
                dimpl::Output::Packet(p) => out.push(p.to_vec()),
                dimpl::Output::KeyingMaterial(km, _) => self.keying_material = Some(km.to_vec()),
                dimpl::Output::Timeout(_) => break,
                _ => {}
            }
        }
        out
    }
}

/// RFC 5764 §4.2: client key | server key | client salt | server salt.
fn split_keys(suite: SrtpSuite, km: &[u8]) -> Result<SrtpKeys, DtlsError> {
    let (k, s) = suite.key_salt_len();
    if km.len() < 2 * (k + s) {
        return Err(DtlsError::NoSrtp);
    }
    let part = |a: usize, b: usize| km.get(a..b).map(<[u8]>::to_vec).ok_or(DtlsError::NoSrtp);
    Ok(SrtpKeys {
        suite,
        remote_key: part(0, k)?,
        local_key: part(k, 2 * k)?,
        remote_salt: part(2 * k, 2 * k + s)?,
        local_salt: part(2 * k + s, 2 * k + 2 * s)?,
    })
}

/// Parse `AA:BB:..` hex into bytes.
pub fn parse_fingerprint(s: &str) -> Option<Vec<u8>> {
    s.split(':').map(|h| u8::from_str_radix(h, 16).ok()).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_agree_on_keys_and_check_fingerprints() {
        let t0 = crate::runtime::now();
        let server_id = DtlsIdentity::generate().unwrap();
        let client_id = DtlsIdentity::generate().unwrap();
        let client_fp = parse_fingerprint(&client_id.fingerprint).unwrap();
        let mut server = DtlsServer::new(&server_id, client_fp, t0);
        // A dimpl client stands in for the browser.
        let mut client = dimpl::Dtls::new_12(Arc::clone(&client_id.config), (*client_id.cert).clone(), t0);
        client.set_active(true);
        client.handle_timeout(t0).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut client_keys = None;
        let mut server_keys = None;
        for _ in 0..50 {
            let mut to_server = Vec::new();
            loop {
                match client.poll_output(&mut buf) {
                    dimpl::Output::Packet(p) => to_server.push(p.to_vec()),
                    dimpl::Output::Timeout(_) => break,
                    dimpl::Output::KeyingMaterial(km, p) => client_keys = Some((km.to_vec(), p)),
                    _ => {}
                }
            }
            for p in to_server {
                server.handle_datagram(&p).unwrap();
            }
            while let Some(p) = server.poll_transmit() {
                client.handle_packet(&p).unwrap();
            }
            if let Some(DtlsEvent::Connected(k)) = server.poll_event() {
                server_keys = Some(k);
            }
            if server_keys.is_some() && client_keys.is_some() {
                break;
            }
        }
        let sk = server_keys.expect("server connected");
        let (km, _) = client_keys.expect("client exported keys");
        let (k, s) = sk.suite.key_salt_len();
        assert_eq!(&km[..k], &sk.remote_key[..]);
        assert_eq!(&km[k..2 * k], &sk.local_key[..]);
        assert_eq!(sk.remote_salt.len(), s);
    }

    #[test]
    fn wrong_fingerprint_fails_the_handshake() {
        let t0 = crate::runtime::now();
        let server_id = DtlsIdentity::generate().unwrap();
        let client_id = DtlsIdentity::generate().unwrap();
        let mut server = DtlsServer::new(&server_id, vec![0u8; 32], t0);
        let mut client = dimpl::Dtls::new_12(Arc::clone(&client_id.config), (*client_id.cert).clone(), t0);
        client.set_active(true);
        client.handle_timeout(t0).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut failed = false;
        'outer: for _ in 0..50 {
            let mut to_server = Vec::new();
            loop {
                match client.poll_output(&mut buf) {
                    dimpl::Output::Packet(p) => to_server.push(p.to_vec()),
                    dimpl::Output::Timeout(_) => break,
                    _ => {}
                }
            }
            for p in to_server {
                if let Err(e) = server.handle_datagram(&p) {
                    assert_eq!(e, DtlsError::FingerprintMismatch);
                    failed = true;
                    break 'outer;
                }
            }
            while let Some(p) = server.poll_transmit() {
                let _ = client.handle_packet(&p);
            }
        }
        assert!(failed);
    }

    #[test]
    fn test_client_completes_a_handshake() {
        let t0 = crate::runtime::now();
        let server_id = DtlsIdentity::generate().unwrap();
        let client_id = DtlsIdentity::generate().unwrap();
        let mut server = DtlsServer::new(&server_id, parse_fingerprint(&client_id.fingerprint).unwrap(), t0);
        let mut client = DtlsTestClient::new(&client_id, t0);
        let mut keys = None;
        for _ in 0..20 {
            for d in client.poll_datagrams() {
                server.handle_datagram(&d).unwrap();
            }
            while let Some(d) = server.poll_transmit() {
                client.handle_datagram(&d).unwrap();
            }
            if let Some(DtlsEvent::Connected(k)) = server.poll_event() {
                keys = Some(k);
            }
            if keys.is_some() && client.keying_material.is_some() {
                break;
            }
        }
        let keys = keys.expect("server connected");
        let km = client.keying_material.expect("client exported keys");
        let (k, _) = keys.suite.key_salt_len();
        assert_eq!(&km[..k], &keys.remote_key[..]);
    }

    #[test]
    fn an_engine_panic_fails_only_its_session() {
        let before = ENGINE_PANICS.load(Ordering::Relaxed);
        let mut engine = 0u32;
        let mut panicked = false;
        assert_eq!(guarded(&mut engine, &mut panicked, |e| *e + 1), Ok(1));
        let r: Result<(), _> = guarded(&mut engine, &mut panicked, |_| panic!("engine bug"));
        assert_eq!(r, Err(DtlsError::EnginePanicked));
        assert!(panicked);
        assert!(ENGINE_PANICS.load(Ordering::Relaxed) > before);
        // Dead from then on: the engine is not called again.
        assert_eq!(guarded(&mut engine, &mut panicked, |_| unreachable!()), Err::<(), _>(DtlsError::EnginePanicked));
        // A session whose engine died reports it on every call.
        let t0 = crate::runtime::now();
        let id = DtlsIdentity::generate().unwrap();
        let mut s = DtlsServer::new(&id, vec![0; 32], t0);
        s.panicked = true;
        assert_eq!(s.handle_datagram(&[22, 0xFE, 0xFD]), Err(DtlsError::EnginePanicked));
        assert_eq!(s.handle_timeout(t0 + std::time::Duration::from_secs(60)), Err(DtlsError::EnginePanicked));
    }

    #[test]
    fn an_engine_assertion_reached_by_a_peer_fails_only_its_session() {
        // Found by tools/fuzz (the DTLS target, input 17 02 00 00 00 00 00 00 00
        // 04 00 00 00 00 00 00 00 30 0c 3a 00): dimpl 0.7.6 asserts, in release
        // builds too (dtls12/engine.rs:381, `assert_eq!(seq_current.epoch, 0)`
        // in insert_incoming_non_handshake), that a non-handshake record seen
        // twice is of epoch 0. The same application-data record claiming epoch
        // 1, sent twice to a fresh server, is all it takes. Without the guard
        // that panic would take the worker, and with it the whole process, down.
        let t0 = crate::runtime::now();
        let id = DtlsIdentity::generate().unwrap();
        let mut server = DtlsServer::new(&id, vec![0; 32], t0);
        let before = ENGINE_PANICS.load(Ordering::Relaxed);
        // RFC 6347 §4.1: type 23, version 1.2, epoch 1, sequence 0, length 16.
        let mut record = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 0, 0, 16];
        record.extend_from_slice(&[0xAB; 16]);
        let first = server.handle_datagram(&record);
        let second = server.handle_datagram(&record);
        assert_eq!((first, second), (Ok(()), Err(DtlsError::EnginePanicked)));
        assert!(ENGINE_PANICS.load(Ordering::Relaxed) > before);
        // The session stays failed; another one is unaffected.
        assert_eq!(server.handle_datagram(&record), Err(DtlsError::EnginePanicked));
        let mut other = DtlsServer::new(&id, vec![0; 32], t0);
        assert_eq!(other.handle_datagram(&record), Ok(()));
        assert!(!other.panicked);
    }
}
