//! TLS server streams over non-blocking mio sockets (https, wss, later RTMPS).
//!
//! Implemented:
//! - [`load_server_config`]: a PEM certificate chain and a PEM private key (PKCS#8,
//!   PKCS#1 RSA or SEC1 EC) become an `Arc<rustls::ServerConfig>` on the `ring`
//!   provider (no cmake), TLS 1.2 and 1.3, ALPN `http/1.1`. The key is checked
//!   against the certificate. Errors name the file and the problem.
//! - [`TlsStream`]: a mio `TcpStream` plus a `rustls::ServerConnection` that behaves
//!   like a plain non-blocking socket. `Read` gives plaintext (or `WouldBlock`, or
//!   `Ok(0)` at close_notify / EOF); `Write` hands plaintext to rustls and pushes
//!   records to the socket. Handshake records produced while reading are flushed by
//!   `read` itself, so a caller that treats it as a socket drives the handshake.
//!
//! What the caller must still do (the one thing a plain socket does not need): when the
//! socket reports writable, call [`TlsStream::write_tls_pending`] even if it has no
//! plaintext of its own to send, because records that met `WouldBlock` wait inside
//! rustls. [`TlsStream::wants_write`] says whether any do.
//!
//! Bounds: outgoing TLS records (and plaintext written before the handshake finishes)
//! are capped at [`TLS_SEND_BUFFER_LIMIT`]; past it `write` returns fewer bytes or
//! `WouldBlock`. Incoming: rustls holds at most one partial record (64 KiB during the
//! handshake) and we only read from the socket when no decrypted plaintext is waiting,
//! so received plaintext stays near 16 KiB. PEM files are read up to [`PEM_FILE_MAX`].
//!
//! Deliberately not implemented: client certificates, SNI-based certificate choice,
//! certificate reload, OCSP stapling, 0-RTT, and a TLS client. rustls' `logging`
//! feature is not used. TLS runs only here in `runtime/` because rustls' stream API
//! does socket I/O; the record layer itself is rustls' sans-IO core.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConnection;
use rustls::ServerConfig;

/// ALPN id for HTTP/1.1 (RFC 7301 §6); WebSocket upgrades ride on it (RFC 6455 §4.1).
pub const TLS_ALPN_HTTP11: &[u8] = b"http/1.1";

/// Most bytes of TLS records (and of plaintext written during the handshake) that one
/// connection buffers before `write` pushes back. Policy: `write` accepts what fits and
/// returns `WouldBlock` when nothing fits; nothing is dropped.
pub const TLS_SEND_BUFFER_LIMIT: usize = 256 * 1024;

/// Largest PEM file we read; a certificate chain is a few KiB.
pub const PEM_FILE_MAX: u64 = 1024 * 1024;

/// PEM label of an encrypted PKCS#8 key (RFC 7468 §11), which we cannot use.
const PEM_ENCRYPTED_KEY: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";

// ---- configuration ------------------------------------------------------------------

/// Why a certificate / key pair could not become a server configuration.
#[derive(Debug)]
pub enum TlsSetupError {
    /// The file could not be opened or read.
    Unreadable { path: PathBuf, source: io::Error },
    /// The file is larger than [`PEM_FILE_MAX`].
    TooLarge { path: PathBuf },
    /// A PEM section is malformed (bad base64, missing END line, ...).
    BadPem { path: PathBuf, cause: pem::Error },
    /// No `CERTIFICATE` section in the certificate file.
    NoCertificate { path: PathBuf },
    /// No `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section in the key file.
    NoPrivateKey { path: PathBuf },
    /// Only an `ENCRYPTED PRIVATE KEY` section in the key file.
    EncryptedKey { path: PathBuf },
    /// The end-entity certificate could not be parsed.
    BadCertificate { path: PathBuf, cause: rustls::Error },
    /// The key could not be loaded (unsupported algorithm or corrupt DER).
    UnsupportedKey { path: PathBuf, cause: rustls::Error },
    /// The key's public half is not the one in the end-entity certificate.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the configuration for another reason.
    Config(rustls::Error),
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreadable { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            Self::TooLarge { path } => {
                write!(
                    f,
                    "{}: larger than {PEM_FILE_MAX} bytes, not a PEM certificate or key",
                    path.display()
                )
            }
            Self::BadPem { path, cause } => write!(f, "{}: malformed PEM: {cause}", path.display()),
            Self::NoCertificate { path } => {
                write!(
                    f,
                    "{}: no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)",
                    path.display()
                )
            }
            Self::NoPrivateKey { path } => write!(
                f,
                "{}: no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" \
                 or \"BEGIN EC PRIVATE KEY\" block)",
                path.display()
            ),
            Self::EncryptedKey { path } => {
                write!(
                    f,
                    "{}: private key is encrypted; store it unencrypted (PKCS#8)",
                    path.display()
                )
            }
            Self::BadCertificate { path, cause } => write!(f, "{}: bad certificate: {cause}", path.display()),
            Self::UnsupportedKey { path, cause } => write!(f, "{}: unusable private key: {cause}", path.display()),
            Self::KeyMismatch { cert, key } => write!(
                f,
                "{}: private key does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            Self::Config(e) => write!(f, "TLS configuration rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreadable { source, .. } => Some(source),
            Self::BadPem { cause, .. } => Some(cause),
            Self::BadCertificate { cause, .. } | Self::UnsupportedKey { cause, .. } | Self::Config(cause) => {
                Some(cause)
            }
            _ => None,
        }
    }
}

/// Load a PEM certificate chain (end-entity first) and its PEM private key into a
/// server configuration: ring provider, TLS 1.2 + 1.3, no client auth, ALPN `http/1.1`.
/// The two paths may name the same file holding both.
pub fn load_server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let cert_bytes = read_pem_file(cert_pem)?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| TlsSetupError::BadPem {
            path: cert_pem.to_path_buf(),
            cause,
        })?;
    if chain.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            path: cert_pem.to_path_buf(),
        });
    }

    let key_bytes = read_pem_file(key_pem)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(k) => k,
        Err(pem::Error::NoItemsFound) if contains(&key_bytes, PEM_ENCRYPTED_KEY) => {
            return Err(TlsSetupError::EncryptedKey {
                path: key_pem.to_path_buf(),
            })
        }
        Err(pem::Error::NoItemsFound) => {
            return Err(TlsSetupError::NoPrivateKey {
                path: key_pem.to_path_buf(),
            })
        }
        Err(cause) => {
            return Err(TlsSetupError::BadPem {
                path: key_pem.to_path_buf(),
                cause,
            })
        }
    };

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => TlsSetupError::KeyMismatch {
                cert: cert_pem.to_path_buf(),
                key: key_pem.to_path_buf(),
            },
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                TlsSetupError::BadCertificate {
                    path: cert_pem.to_path_buf(),
                    cause: e,
                }
            }
            cause => TlsSetupError::UnsupportedKey {
                path: key_pem.to_path_buf(),
                cause,
            },
        })?;
    config.alpn_protocols = vec![TLS_ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration of `rtmps://` pushes: ring provider, TLS 1.2 + 1.3,
/// the public web roots (webpki-roots, built in: no system store needed) plus
/// every certificate in `extra_ca` (`--push-ca`, a private CA or a self-signed
/// destination). Returns the configuration and how many extra roots it holds.
pub fn load_client_config(extra_ca: Option<&Path>) -> Result<(Arc<rustls::ClientConfig>, usize), TlsSetupError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut extra = 0;
    if let Some(path) = extra_ca {
        let bytes = read_pem_file(path)?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|cause| TlsSetupError::BadPem { path: path.to_path_buf(), cause })?;
        if certs.is_empty() {
            return Err(TlsSetupError::NoCertificate { path: path.to_path_buf() });
        }
        for c in certs {
            roots.add(c).map_err(|cause| TlsSetupError::BadCertificate { path: path.to_path_buf(), cause })?;
            extra += 1;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(config), extra))
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    let unreadable = |source| TlsSetupError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > PEM_FILE_MAX {
        return Err(TlsSetupError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---- the stream ---------------------------------------------------------------------

/// A fatal TLS failure, carried inside the `io::Error` (kind `InvalidData`) that
/// `read` / `write` return. Its Display is the rustls cause, e.g. the alert received.
#[derive(Debug, Clone)]
pub struct TlsProtocolError(pub rustls::Error);

impl fmt::Display for TlsProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A server-side TLS connection on a non-blocking socket; use it where a `TcpStream`
/// would be read until `WouldBlock` and written with `write_vectored`.
pub struct TlsStream {
    tcp: TcpStream,
    /// Server side for `--https`/`--rtmps`, client side for `rtmps://` pushes.
    conn: rustls::Connection,
    /// The socket returned EOF; never read it again.
    eof: bool,
    /// A fatal TLS error happened; every later read/write repeats it.
    failed: Option<rustls::Error>,
    /// Decrypted bytes rustls holds that `read` has not handed out yet.
    plaintext_left: usize,
}

impl TlsStream {
    /// Wrap an accepted (non-blocking) socket; the handshake starts on the first read.
    pub fn new(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(TLS_SEND_BUFFER_LIMIT));
        Ok(Self::wrap(tcp, rustls::Connection::Server(conn)))
    }

    /// Wrap a connecting (non-blocking) socket as the client of `server_name`; the
    /// ClientHello goes out on the first write or flush.
    pub fn client(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let mut conn = rustls::ClientConnection::new(config, server_name)?;
        conn.set_buffer_limit(Some(TLS_SEND_BUFFER_LIMIT));
        Ok(Self::wrap(tcp, rustls::Connection::Client(conn)))
    }

    fn wrap(tcp: TcpStream, conn: rustls::Connection) -> Self {
        Self {
            tcp,
            conn,
            eof: false,
            failed: None,
            plaintext_left: 0,
        }
    }

    /// The socket, for `peer_addr` / `local_addr`.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket, for mio registration and socket options.
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// TLS records are waiting for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The handshake has not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Decrypted bytes are waiting inside rustls. A caller that stops reading before
    /// `WouldBlock` (a read budget) must come back for them itself: the socket may
    /// be empty, so no readiness event will remind it.
    pub fn has_buffered_plaintext(&self) -> bool {
        self.plaintext_left > 0
    }

    /// The ALPN protocol the client and we agreed on, once the handshake is done.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The SNI host name the client asked for, if any.
    pub fn server_name(&self) -> Option<&str> {
        match &self.conn {
            rustls::Connection::Server(c) => c.server_name(),
            rustls::Connection::Client(_) => None,
        }
    }

    /// Push buffered TLS records to the socket until it would block or nothing is
    /// left. `WouldBlock` is not an error here: it leaves `wants_write()` true.
    pub fn write_tls_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted 0 TLS bytes")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queue a close_notify alert (RFC 8446 §6.1) and try to send it; the caller closes
    /// the socket once `wants_write()` is false (or gives up on it).
    pub fn send_close_notify(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.write_tls_pending()
    }

    fn fail(&mut self, e: rustls::Error) -> io::Error {
        // The alert describing the failure is queued; send it if the socket takes it.
        let _ = self.write_tls_pending();
        self.failed = Some(e.clone());
        io::Error::new(io::ErrorKind::InvalidData, TlsProtocolError(e))
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, TlsProtocolError(e.clone()))),
            None => Ok(()),
        }
    }
}

impl Read for TlsStream {
    /// Plaintext if any is available; otherwise read records from the socket, decrypt,
    /// and flush what the handshake wants to send. `WouldBlock` only when no plaintext
    /// is buffered and the socket would block; `Ok(0)` after close_notify or EOF.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check_failed()?;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => {
                    // n == 0: the peer sent close_notify and everything before it was read.
                    self.plaintext_left = self.plaintext_left.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: every protocol we carry frames its own
                // messages, so a truncation is seen there; to us it is a close.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.plaintext_left = 0;
            if self.eof {
                return Ok(0);
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_tls_pending()?;
                    return Err(e);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            match self.conn.process_new_packets() {
                Ok(state) => self.plaintext_left = state.plaintext_bytes_to_read(),
                Err(e) => return Err(self.fail(e)),
            }
            // Handshake flights (and any alert) go out now, not when the caller writes.
            self.write_tls_pending()?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Encrypt as much as fits under [`TLS_SEND_BUFFER_LIMIT`] and push records to the
    /// socket. Returns the plaintext bytes accepted; `WouldBlock` if none fit.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.check_failed()?;
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        // Make room first: records already queued go before new ones.
        self.write_tls_pending()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        self.write_tls_pending()?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Push queued records; `WouldBlock` if some are still waiting for the socket.
    fn flush(&mut self) -> io::Result<()> {
        self.check_failed()?;
        self.write_tls_pending()?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

/// Registering a `TlsStream` registers its socket.
impl mio::event::Source for TlsStream {
    fn register(&mut self, registry: &mio::Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        self.tcp.register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &mio::Registry, token: mio::Token, interests: mio::Interest) -> io::Result<()> {
        self.tcp.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.tcp.deregister(registry)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    use std::net::SocketAddr;
    use std::sync::mpsc;
    use std::time::Duration;

    // ---- fixtures ----

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("rtcbridge-tls-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        fn write(&self, file: &str, body: &[u8]) -> PathBuf {
            let p = self.0.join(file);
            std::fs::write(&p, body).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut s = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(line).unwrap());
            s.push('\n');
        }
        s.push_str(&format!("-----END {label}-----\n"));
        s
    }

    /// A fresh self-signed "localhost" certificate: (cert DER, cert PEM, PKCS#8 key PEM).
    fn self_signed() -> (CertificateDer<'static>, String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = ck.cert.der().clone();
        let cert_pem = pem_block("CERTIFICATE", &der);
        let key_pem = pem_block("PRIVATE KEY", &ck.signing_key.serialize_der());
        (der, cert_pem, key_pem)
    }

    fn server_setup(dir: &TempDir) -> (CertificateDer<'static>, Arc<ServerConfig>) {
        let (der, cert_pem, key_pem) = self_signed();
        let c = dir.write("cert.pem", cert_pem.as_bytes());
        let k = dir.write("key.pem", key_pem.as_bytes());
        (der, load_server_config(&c, &k).unwrap())
    }

    fn client_config(root: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// Accept one connection, waiting on mio readiness (bounded).
    fn accept_one(poll: &mut Poll, l: &mut TcpListener) -> TcpStream {
        const LISTENER: Token = Token(1);
        poll.registry().register(l, LISTENER, Interest::READABLE).unwrap();
        let mut events = Events::with_capacity(8);
        for _ in 0..100 {
            match l.accept() {
                Ok((s, _)) => {
                    poll.registry().deregister(l).unwrap();
                    return s;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        panic!("no connection within 10 s");
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) % 251)
            .collect()
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    /// Length of a complete `Content-Length` request in `buf`, once it is all there.
    fn complete_request(buf: &[u8]) -> Option<usize> {
        let head_end = find(buf, b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&buf[..head_end]).ok()?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        (buf.len() >= head_end + len).then_some(head_end + len)
    }

    // ---- the exchange ----

    const REQUEST_BODY: usize = 100 * 1024;
    const RESPONSE_BODY: usize = 1024 * 1024;

    struct Served {
        request: Vec<u8>,
        write_would_blocks: usize,
        partial_writes: usize,
        alpn: Option<Vec<u8>>,
        saw_close: bool,
    }

    /// The server side as the worker runs it: edge-triggered mio, read until WouldBlock,
    /// vectored writes of a queue, `write_tls_pending` on writable.
    fn serve(mut l: TcpListener, config: Arc<ServerConfig>, blocked: mpsc::Sender<()>) -> Served {
        const CONN: Token = Token(2);
        let mut poll = Poll::new().unwrap();
        let tcp = accept_one(&mut poll, &mut l);
        // A small send buffer so the 1 MiB response meets WouldBlock many times.
        socket2::SockRef::from(&tcp).set_send_buffer_size(16 * 1024).unwrap();
        let mut s = TlsStream::new(tcp, config).unwrap();
        poll.registry()
            .register(&mut s, CONN, Interest::READABLE | Interest::WRITABLE)
            .unwrap();

        let response = {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {RESPONSE_BODY}\r\n\r\n").into_bytes();
            r.extend_from_slice(&pattern(RESPONSE_BODY, 7));
            r
        };
        let mut out = Served {
            request: Vec::new(),
            write_would_blocks: 0,
            partial_writes: 0,
            alpn: None,
            saw_close: false,
        };
        let mut sent: Option<usize> = None; // bytes of the response handed to TlsStream
        let mut close_sent = false;
        let mut events = Events::with_capacity(8);
        let mut idle = 0;
        let mut buf = vec![0u8; 16 * 1024];
        while !(out.saw_close && close_sent && !s.wants_write()) {
            poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
            if events.is_empty() {
                idle += 1;
                assert!(
                    idle < 100,
                    "server stalled: sent {sent:?}, wants_write {}",
                    s.wants_write()
                );
                continue;
            }
            idle = 0;
            s.write_tls_pending().unwrap();
            // Read until WouldBlock.
            while !out.saw_close {
                match s.read(&mut buf) {
                    Ok(0) => out.saw_close = true,
                    Ok(n) => out.request.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
            if sent.is_none() && complete_request(&out.request).is_some() {
                out.alpn = s.alpn_protocol().map(<[u8]>::to_vec);
                sent = Some(0);
            }
            // Write the rest of the response, two slices at a time, until WouldBlock.
            while let Some(off) = sent.filter(|o| *o < response.len()) {
                let rest = &response[off..];
                let (a, b) = rest.split_at(rest.len() / 2);
                match s.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                    Ok(n) => {
                        assert!(n > 0 && n <= rest.len());
                        if n < rest.len() {
                            out.partial_writes += 1;
                        }
                        sent = Some(off + n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if out.write_would_blocks == 0 {
                            let _ = blocked.send(());
                        }
                        out.write_would_blocks += 1;
                        break;
                    }
                    Err(e) => panic!("server write: {e}"),
                }
            }
            if sent == Some(response.len()) && !close_sent {
                s.send_close_notify().unwrap();
                close_sent = true;
            }
        }
        out
    }

    /// A blocking rustls client with a small receive window. It waits until the server
    /// has met WouldBlock before it reads, so back-pressure is certain.
    fn client(addr: SocketAddr, root: CertificateDer<'static>, blocked: mpsc::Receiver<()>) -> Vec<u8> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        sock.connect(&addr.into()).unwrap();
        let tcp: std::net::TcpStream = sock.into();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let conn = rustls::ClientConnection::new(client_config(root), "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut req =
            format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {REQUEST_BODY}\r\n\r\n").into_bytes();
        req.extend_from_slice(&pattern(REQUEST_BODY, 3));
        tls.write_all(&req).unwrap();
        tls.flush().unwrap();
        blocked
            .recv_timeout(Duration::from_secs(20))
            .expect("server never met WouldBlock");
        let mut resp = Vec::new();
        tls.read_to_end(&mut resp).unwrap(); // ends at the server's close_notify
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        resp
    }

    #[test]
    fn http_exchange_larger_than_64k_with_backpressure() {
        let dir = TempDir::new("exchange");
        let (root, config) = server_setup(&dir);
        let (l, addr) = listener();
        let (tx, rx) = mpsc::channel();
        let client = std::thread::spawn(move || client(addr, root, rx));
        let served = serve(l, config, tx);
        let resp = client.join().unwrap();

        let mut want_req =
            format!("POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {REQUEST_BODY}\r\n\r\n").into_bytes();
        want_req.extend_from_slice(&pattern(REQUEST_BODY, 3));
        assert_eq!(served.request, want_req);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {RESPONSE_BODY}\r\n\r\n").into_bytes();
        assert_eq!(resp.len(), head.len() + RESPONSE_BODY);
        assert_eq!(&resp[..head.len()], &head[..]);
        assert!(
            resp[head.len()..] == pattern(RESPONSE_BODY, 7)[..],
            "response body corrupted"
        );
        assert!(served.write_would_blocks > 0, "write never returned WouldBlock");
        assert!(served.partial_writes > 0, "write never accepted a partial buffer");
        assert_eq!(served.alpn.as_deref(), Some(TLS_ALPN_HTTP11));
        assert!(served.saw_close);
    }

    // ---- hostile and broken peers ----

    #[derive(Debug)]
    enum Outcome {
        Closed,
        Failed(io::Error),
    }

    /// Send `bytes` from a raw client, half-close, and drive the server until it
    /// reports a close or an error. Returns that and whatever the server sent back.
    fn feed_raw(config: &Arc<ServerConfig>, bytes: &[u8]) -> (Outcome, Vec<u8>) {
        let (mut l, addr) = listener();
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        let mut poll = Poll::new().unwrap();
        let tcp = accept_one(&mut poll, &mut l);
        let mut s = TlsStream::new(tcp, config.clone()).unwrap();
        poll.registry()
            .register(&mut s, Token(2), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        raw.write_all(bytes).unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let mut events = Events::with_capacity(8);
        let mut buf = [0u8; 4096];
        let outcome = 'outer: {
            for _ in 0..100 {
                poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
                // Garbage never yields plaintext, so one read drains to WouldBlock.
                match s.read(&mut buf) {
                    Ok(0) => break 'outer Outcome::Closed,
                    Ok(n) => panic!("{n} bytes of plaintext from garbage"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => break 'outer Outcome::Failed(e),
                }
            }
            panic!("server neither closed nor failed within 10 s");
        };
        // The stream keeps failing the same way and never panics afterwards.
        if let Outcome::Failed(_) = outcome {
            assert!(s.read(&mut buf).is_err());
            assert!(s.write(b"x").is_err());
        }
        drop(s);
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut back = Vec::new();
        let _ = raw.read_to_end(&mut back);
        (outcome, back)
    }

    #[test]
    fn plaintext_http_gets_an_error_and_an_alert() {
        let dir = TempDir::new("garbage");
        let (_, config) = server_setup(&dir);
        let (outcome, back) = feed_raw(&config, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let Outcome::Failed(e) = outcome else {
            panic!("expected an error, got {outcome:?}")
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let text = e.to_string();
        assert!(text.starts_with("TLS: "), "{text}");
        assert!(e.get_ref().is_some_and(|inner| inner.is::<TlsProtocolError>()));
        // RFC 8446 §5.1: an alert record (content type 21) went back to the client.
        assert_eq!(back.first(), Some(&21), "no alert sent: {back:?}");
    }

    /// A real ClientHello, from rustls' client talking to a Vec.
    fn client_hello(root: CertificateDer<'static>) -> Vec<u8> {
        let mut c = rustls::ClientConnection::new(client_config(root), "localhost".try_into().unwrap()).unwrap();
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn every_prefix_of_a_client_hello_then_eof_closes_quietly() {
        let dir = TempDir::new("prefix");
        let (root, config) = server_setup(&dir);
        let hello = client_hello(root);
        assert!(hello.len() > 50);
        // Every prefix up to the header, then a stride through the rest (each one is a
        // real connection, so not all of them).
        let cuts: Vec<usize> = (1..8).chain((8..hello.len()).step_by(17)).collect();
        for cut in cuts {
            let (outcome, _) = feed_raw(&config, &hello[..cut]);
            assert!(matches!(outcome, Outcome::Closed), "prefix {cut}: {outcome:?}");
        }
        // The whole hello then EOF: the server answers, then sees the close.
        let (outcome, back) = feed_raw(&config, &hello);
        assert!(matches!(outcome, Outcome::Closed), "{outcome:?}");
        assert_eq!(back.first(), Some(&22), "no ServerHello record"); // RFC 8446 §5.1 handshake(22)
    }

    #[test]
    fn random_and_mutated_bytes_never_panic() {
        let dir = TempDir::new("fuzz");
        let (root, config) = server_setup(&dir);
        let hello = client_hello(root);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut failures = 0;
        for round in 0..24 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                // Random bytes, half of them behind a plausible record header.
                let len = (next() % 3000) as usize + 1;
                let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if round % 4 == 0 && v.len() > 5 {
                    v[..3].copy_from_slice(&[22, 3, 1]);
                }
                v
            } else {
                // The real ClientHello with a few bytes flipped.
                let mut v = hello.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % v.len();
                    v[i] ^= (next() as u8) | 1;
                }
                v
            };
            let (outcome, _) = feed_raw(&config, &bytes);
            if let Outcome::Failed(e) = &outcome {
                assert!(!e.to_string().is_empty());
                failures += 1;
            }
        }
        assert!(failures > 0, "no input was rejected");
    }

    // ---- configuration errors ----

    #[test]
    fn loads_separate_and_combined_pem_files() {
        let dir = TempDir::new("load");
        let (_, cert_pem, key_pem) = self_signed();
        let c = dir.write("cert.pem", cert_pem.as_bytes());
        let k = dir.write("key.pem", key_pem.as_bytes());
        let cfg = load_server_config(&c, &k).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let both = dir.write("both.pem", format!("{key_pem}{cert_pem}").as_bytes());
        load_server_config(&both, &both).unwrap();
    }

    #[test]
    fn missing_file_is_unreadable_and_named() {
        let dir = TempDir::new("missing");
        let (_, _, key_pem) = self_signed();
        let k = dir.write("key.pem", key_pem.as_bytes());
        let c = dir.0.join("nope.pem");
        let e = load_server_config(&c, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::Unreadable { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("nope.pem") && text.contains("cannot read"), "{text}");
    }

    #[test]
    fn no_certificate_and_no_key_are_told_apart() {
        let dir = TempDir::new("nothing");
        let (_, cert_pem, key_pem) = self_signed();
        let c = dir.write("cert.pem", cert_pem.as_bytes());
        let k = dir.write("key.pem", key_pem.as_bytes());
        let empty = dir.write("empty.pem", b"just some text\n");

        let e = load_server_config(&k, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::NoCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains("key.pem: no certificate found"), "{e}");
        let e = load_server_config(&empty, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::NoCertificate { .. }), "{e:?}");

        let e = load_server_config(&c, &c).unwrap_err();
        assert!(matches!(e, TlsSetupError::NoPrivateKey { .. }), "{e:?}");
        assert!(e.to_string().contains("cert.pem: no private key found"), "{e}");
        let e = load_server_config(&c, &empty).unwrap_err();
        assert!(matches!(e, TlsSetupError::NoPrivateKey { .. }), "{e:?}");
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let dir = TempDir::new("mismatch");
        let (_, cert_pem, _) = self_signed();
        let (_, _, other_key) = self_signed();
        let c = dir.write("cert.pem", cert_pem.as_bytes());
        let k = dir.write("other.pem", other_key.as_bytes());
        let e = load_server_config(&c, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::KeyMismatch { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("other.pem") && text.contains("does not match") && text.contains("cert.pem"),
            "{text}"
        );
    }

    #[test]
    fn malformed_encrypted_corrupt_and_huge_files() {
        let dir = TempDir::new("bad");
        let (_, cert_pem, key_pem) = self_signed();
        let c = dir.write("cert.pem", cert_pem.as_bytes());
        let k = dir.write("key.pem", key_pem.as_bytes());

        let bad64 = dir.write(
            "bad64.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let e = load_server_config(&bad64, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::BadPem { .. }), "{e:?}");
        assert!(e.to_string().contains("bad64.pem: malformed PEM"), "{e}");

        let unterminated = dir.write("cut.pem", &cert_pem.as_bytes()[..cert_pem.len() / 2]);
        let e = load_server_config(&unterminated, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::BadPem { .. }), "{e:?}");

        let enc = dir.write(
            "enc.pem",
            pem_block("ENCRYPTED PRIVATE KEY", &[0x30, 0x03, 1, 2, 3]).as_bytes(),
        );
        let e = load_server_config(&c, &enc).unwrap_err();
        assert!(matches!(e, TlsSetupError::EncryptedKey { .. }), "{e:?}");

        let junk_key = dir.write("junk.pem", pem_block("PRIVATE KEY", &[0x30, 0x03, 1, 2, 3]).as_bytes());
        let e = load_server_config(&c, &junk_key).unwrap_err();
        assert!(matches!(e, TlsSetupError::UnsupportedKey { .. }), "{e:?}");
        assert!(e.to_string().contains("junk.pem: unusable private key"), "{e}");

        let junk_cert = dir.write(
            "junkcert.pem",
            pem_block("CERTIFICATE", &[0x30, 0x03, 1, 2, 3]).as_bytes(),
        );
        let e = load_server_config(&junk_cert, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::BadCertificate { .. }), "{e:?}");

        let huge = dir.write("huge.pem", &vec![b'A'; PEM_FILE_MAX as usize + 1]);
        let e = load_server_config(&huge, &k).unwrap_err();
        assert!(matches!(e, TlsSetupError::TooLarge { .. }), "{e:?}");
    }
}
