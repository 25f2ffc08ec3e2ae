//! Access control decisions (sans-IO): signed tokens and who may publish or play.
//!
//! A token is `rtb1.PAYLOAD.MAC`, both parts base64url without padding. PAYLOAD is a
//! small JSON object `{"act":"publish"|"play","name":NAME,"exp":UNIX_SECS,"ip":IP?}`;
//! a NAME ending in `*` is a prefix (`team-*` covers `team-a`, `team-b`). MAC is
//! HMAC-SHA256 (RFC 2104) over the ASCII bytes `rtb1.PAYLOAD` with the operator's secret
//! (`--auth-secret FILE`). The MAC is checked in constant time before the payload is
//! read; then the action, the name, the expiry (against `now_unix`, passed in) and the
//! client address (when the token names one).
//!
//! Not implemented here: key rotation (one secret at a time), token revocation (keep
//! TTLs short), and the HTTP hook (the runtime's job: it performs I/O).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::IpAddr;

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "rtb1";
/// Longest token accepted: longer input is refused before any work.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a client asks to do with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAction {
    Publish,
    Play,
}

impl AuthAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthAction::Publish => "publish",
            AuthAction::Play => "play",
        }
    }
}

/// Which actions need authorization (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthScope {
    pub publish: bool,
    pub play: bool,
}

impl AuthScope {
    pub fn requires(self, a: AuthAction) -> bool {
        match a {
            AuthAction::Publish => self.publish,
            AuthAction::Play => self.play,
        }
    }
}

/// Why a request was refused. The text names the reason, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    NoToken,
    Malformed,
    BadSignature,
    Expired,
    WrongAction,
    WrongName,
    WrongAddress,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::NoToken => "no token",
            Denied::Malformed => "malformed token",
            Denied::BadSignature => "bad token signature",
            Denied::Expired => "token expired",
            Denied::WrongAction => "token is for another action",
            Denied::WrongName => "token is for another stream name",
            Denied::WrongAddress => "token is for another client address",
        }
    }
}

/// The claims of a token whose MAC verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    pub action: AuthAction,
    /// Exact name, or a prefix when it ends in `*`.
    pub name: String,
    pub expires_unix: u64,
    pub ip: Option<IpAddr>,
}

impl TokenClaims {
    fn covers(&self, name: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.name == name,
        }
    }
}

/// The operator's secret, and the signing and checking of tokens.
#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A secret file's content; surrounding whitespace (a trailing newline) is not part of it.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
        let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
        let secret = bytes.get(start..end).unwrap_or(&[]).to_vec();
        if secret.len() < 16 {
            return Err("the secret must be at least 16 bytes (use 32 random bytes, e.g. `head -c 32 /dev/urandom | base64`)");
        }
        Ok(TokenKey { secret })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length (RFC 2104 §2): this cannot fail.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    /// Sign claims into a token.
    pub fn sign(&self, c: &TokenClaims) -> String {
        let mut obj = serde_json::json!({ "act": c.action.as_str(), "name": c.name, "exp": c.expires_unix });
        if let (Some(ip), Some(o)) = (c.ip, obj.as_object_mut()) {
            o.insert("ip".into(), serde_json::Value::String(ip.to_string()));
        }
        let body = format!("{PREFIX}.{}", B64.encode(obj.to_string()));
        let mut m = self.mac();
        m.update(body.as_bytes());
        format!("{body}.{}", B64.encode(m.finalize().into_bytes()))
    }

    /// Verify the MAC (constant time) and decode the claims; does not check them.
    pub fn open(&self, token: &str) -> Result<TokenClaims, Denied> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Denied::Malformed);
        }
        let (body, mac_b64) = token.rsplit_once('.').ok_or(Denied::Malformed)?;
        let payload_b64 = body.strip_prefix(PREFIX).and_then(|r| r.strip_prefix('.')).ok_or(Denied::Malformed)?;
        let mac = B64.decode(mac_b64).map_err(|_| Denied::Malformed)?;
        let mut m = self.mac();
        m.update(body.as_bytes());
        m.verify_slice(&mac).map_err(|_| Denied::BadSignature)?;
        let payload = B64.decode(payload_b64).map_err(|_| Denied::Malformed)?;
        let v: serde_json::Value = serde_json::from_slice(&payload).map_err(|_| Denied::Malformed)?;
        let action = match v.get("act").and_then(|a| a.as_str()) {
            Some("publish") => AuthAction::Publish,
            Some("play") => AuthAction::Play,
            _ => return Err(Denied::Malformed),
        };
        let name = v.get("name").and_then(|n| n.as_str()).ok_or(Denied::Malformed)?.to_owned();
        let expires_unix = v.get("exp").and_then(|e| e.as_u64()).ok_or(Denied::Malformed)?;
        let ip = match v.get("ip").and_then(|i| i.as_str()) {
            Some(s) => Some(s.parse().map_err(|_| Denied::Malformed)?),
            None => None,
        };
        Ok(TokenClaims { action, name, expires_unix, ip })
    }

    /// Check a token that comes with a connection before it names a stream (RTMP
    /// `connect`): signature, expiry and address only.
    pub fn check_connect(&self, token: &str, peer: IpAddr, now_unix: u64) -> Result<TokenClaims, Denied> {
        let c = self.open(token)?;
        if c.expires_unix <= now_unix {
            return Err(Denied::Expired);
        }
        if c.ip.is_some_and(|ip| !same_ip(ip, peer)) {
            return Err(Denied::WrongAddress);
        }
        Ok(c)
    }

    /// May `peer` do `action` on `name` with `token`?
    pub fn authorize(&self, token: Option<&str>, action: AuthAction, name: &str, peer: IpAddr, now_unix: u64) -> Result<(), Denied> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Denied::NoToken)?;
        let c = self.check_connect(token, peer, now_unix)?;
        if c.action != action {
            return Err(Denied::WrongAction);
        }
        if !c.covers(name) {
            return Err(Denied::WrongName);
        }
        Ok(())
    }
}

/// IPv4 peers may arrive as IPv4-mapped IPv6 addresses.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// `token=VALUE` in a URL query (`a=1&token=...`), percent-decoding not needed for
/// tokens (base64url and dots only).
pub fn token_in_query(query: &str) -> Option<&str> {
    query.split('&').find_map(|kv| kv.strip_prefix("token=")).filter(|t| !t.is_empty())
}

/// A bearer token from an `Authorization` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// Compare two secrets in constant time (for the API bearer token).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_file_bytes(b"0123456789abcdef0123456789abcdef\n").unwrap()
    }
    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn claims(action: AuthAction, name: &str, exp: u64) -> TokenClaims {
        TokenClaims { action, name: name.into(), expires_unix: exp, ip: None }
    }

    #[test]
    fn round_trip_and_each_refusal() {
        let k = key();
        let t = k.sign(&claims(AuthAction::Publish, "cam", 1000));
        assert_eq!(k.authorize(Some(&t), AuthAction::Publish, "cam", IP, 999), Ok(()));
        assert_eq!(k.authorize(Some(&t), AuthAction::Publish, "cam", IP, 1000), Err(Denied::Expired));
        assert_eq!(k.authorize(Some(&t), AuthAction::Play, "cam", IP, 999), Err(Denied::WrongAction));
        assert_eq!(k.authorize(Some(&t), AuthAction::Publish, "cam2", IP, 999), Err(Denied::WrongName));
        assert_eq!(k.authorize(None, AuthAction::Publish, "cam", IP, 999), Err(Denied::NoToken));
        let other = TokenKey::from_file_bytes(b"another secret of 16+ bytes").unwrap();
        assert_eq!(other.authorize(Some(&t), AuthAction::Publish, "cam", IP, 999), Err(Denied::BadSignature));
    }

    #[test]
    fn tampered_payload_fails_the_mac() {
        let k = key();
        let t = k.sign(&claims(AuthAction::Publish, "cam", 1000));
        let forged_payload = B64.encode(r#"{"act":"publish","name":"*","exp":99999999999}"#);
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(k.open(&forged), Err(Denied::BadSignature));
        assert_eq!(k.open("garbage"), Err(Denied::Malformed));
        assert_eq!(k.open(&"x".repeat(5000)), Err(Denied::Malformed));
    }

    #[test]
    fn prefix_and_address() {
        let k = key();
        let mut c = claims(AuthAction::Play, "team-*", 1000);
        c.ip = Some("10.0.0.1".parse().unwrap());
        let t = k.sign(&c);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(k.authorize(Some(&t), AuthAction::Play, "team-a", ip, 1), Ok(()));
        assert_eq!(k.authorize(Some(&t), AuthAction::Play, "team-b", mapped, 1), Ok(()));
        assert_eq!(k.authorize(Some(&t), AuthAction::Play, "teamx", ip, 1), Err(Denied::WrongName));
        assert_eq!(k.authorize(Some(&t), AuthAction::Play, "team-a", IP, 1), Err(Denied::WrongAddress));
    }

    #[test]
    fn helpers() {
        assert_eq!(token_in_query("a=1&token=abc"), Some("abc"));
        assert_eq!(token_in_query("token="), None);
        assert_eq!(bearer("Bearer xyz "), Some("xyz"));
        assert_eq!(bearer("Basic xyz"), None);
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(TokenKey::from_file_bytes(b"short").is_err());
    }
}
