//! DTLS-SRTP for WebRTC ingest (RFC 5763, RFC 5764), behind a small type of
//! ours so the engine (dimpl, sans-IO) can be swapped without touching the
//! rest of the media path.
//!
//! We are always the DTLS server (`a=setup:passive`): the browser starts the
//! handshake. The peer's certificate must hash to the fingerprint its SDP
//! announced (RFC 8122 §5); a mismatch ends the session. On success the
//! exported keying material is split into the client (browser → us) and
//! server (us → browser) SRTP master keys and salts (RFC 5764 §4.2).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

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
}

impl std::fmt::Display for DtlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DtlsError::Certificate(s) => write!(f, "DTLS certificate: {s}"),
            DtlsError::Handshake(s) => write!(f, "DTLS handshake failed: {s}"),
            DtlsError::FingerprintMismatch => f.write_str("DTLS peer certificate does not match the SDP fingerprint"),
            DtlsError::NoSrtp => f.write_str("DTLS finished without an SRTP profile"),
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
}

impl DtlsServer {
    /// `expected_sha256` is the remote `a=fingerprint:sha-256` value as bytes.
    pub fn new(id: &DtlsIdentity, expected_sha256: Vec<u8>, now: Instant) -> Self {
        let mut dtls = dimpl::Dtls::new_12(Arc::clone(&id.config), (*id.cert).clone(), now);
        // The engine seeds its handshake randoms in its first timeout: give it one now.
        let _ = dtls.handle_timeout(now);
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
        };
        let _ = s.drain();
        s
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Feed one DTLS datagram. `Err` is fatal for the session.
    pub fn handle_datagram(&mut self, data: &[u8]) -> Result<(), DtlsError> {
        self.dtls.handle_packet(data).map_err(|e| DtlsError::Handshake(e.to_string()))?;
        self.drain()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        if self.timeout.is_some_and(|t| t <= now) {
            self.dtls.handle_timeout(now).map_err(|e| DtlsError::Handshake(e.to_string()))?;
            self.drain()?;
        }
        Ok(())
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
            match self.dtls.poll_output(&mut self.buf) {
                // At most 64 queued datagrams (a whole flight); beyond that drop: DTLS retransmits.
                dimpl::Output::Packet(p) if self.transmit.len() < 64 => self.transmit.push_back(p.to_vec()),
                dimpl::Output::Packet(_) => {}
                dimpl::Output::BufferTooSmall { needed } => {
                    if needed > 1 << 16 {
                        return Err(DtlsError::Handshake("engine asked for an oversized buffer".into()));
                    }
                    self.buf.resize(needed, 0);
                }
                dimpl::Output::Timeout(t) => {
                    self.timeout = Some(t);
                    break;
                }
                dimpl::Output::Connected => self.connected = true,
                dimpl::Output::PeerCert(der) => {
                    let got = Sha256::digest(der);
                    if got.as_slice() != self.expected.as_slice() {
                        return Err(DtlsError::FingerprintMismatch);
                    }
                    self.peer_ok = true;
                }
                dimpl::Output::KeyingMaterial(km, profile) => {
                    let suite = match profile {
                        dimpl::SrtpProfile::AES128_CM_SHA1_80 => SrtpSuite::Aes128CmSha1_80,
                        dimpl::SrtpProfile::AEAD_AES_128_GCM => SrtpSuite::AeadAes128Gcm,
                        dimpl::SrtpProfile::AEAD_AES_256_GCM => SrtpSuite::AeadAes256Gcm,
                        _ => return Err(DtlsError::NoSrtp),
                    };
                    self.keys = Some(split_keys(suite, &km)?);
                }
                dimpl::Output::ApplicationData(_) => {}
                dimpl::Output::CloseNotify => self.events.push_back(DtlsEvent::Closed),
                _ => {}
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
}
