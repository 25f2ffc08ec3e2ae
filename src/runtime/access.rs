//! Access control as the runtime holds it: the secrets read from their files at start,
//! the wall clock for token expiry, and the shared table of WHIP sessions (which worker
//! owns which resource id, so a DELETE that lands on any worker reaches its session).
//! The decisions themselves are `relay::auth`'s.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::{AuthMode, Config};
use crate::relay::auth::{self, AuthAction, AuthScope, Denied, TokenKey};

pub struct Access {
    pub key: Option<TokenKey>,
    pub scope: AuthScope,
    api_token: Option<Vec<u8>>,
    metrics_token: Option<Vec<u8>>,
    origins: Vec<String>,
    /// `--auth-hook` / `--auth-hook-wcs`: every connect, publish and play is asked.
    hook: bool,
    /// WHIP resource id → (owning worker, stream name). Touched on WHIP POST, DELETE and
    /// session end only; never on the media path.
    whip: Mutex<HashMap<String, (usize, Arc<str>)>>,
}

fn read_secret(flag: &str, path: &std::path::Path) -> io::Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{flag} {}: {e}", path.display())))?;
    let t = String::from_utf8_lossy(&raw).trim().as_bytes().to_vec();
    if t.is_empty() {
        return Err(io::Error::other(format!("{flag} {}: the file is empty", path.display())));
    }
    Ok(t)
}

/// Seconds since the Unix epoch (token expiry is wall-clock time).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Access {
    pub fn load(cfg: &Config) -> io::Result<Self> {
        let key = match &cfg.auth_secret {
            Some(p) => Some(
                TokenKey::from_file_bytes(&read_secret("--auth-secret", p)?)
                    .map_err(|e| io::Error::other(format!("--auth-secret {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let scope = match (&key, cfg.auth) {
            (None, _) => AuthScope::default(),
            (Some(_), AuthMode::Publish) => AuthScope { publish: true, play: false },
            (Some(_), AuthMode::Play) => AuthScope { publish: false, play: true },
            (Some(_), AuthMode::All) => AuthScope { publish: true, play: true },
        };
        Ok(Access {
            key,
            scope,
            api_token: cfg.api_token.as_deref().map(|p| read_secret("--api-token", p)).transpose()?,
            metrics_token: cfg.metrics_token.as_deref().map(|p| read_secret("--metrics-token", p)).transpose()?,
            origins: cfg.allowed_origin.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect(),
            hook: cfg.auth_hook.is_some() || cfg.auth_hook_wcs.is_some(),
            whip: Mutex::new(HashMap::new()),
        })
    }

    /// Nothing is protected: the start-up warning names what is open.
    pub fn open_parts(&self) -> Vec<&'static str> {
        let mut open = Vec::new();
        if !self.scope.publish && !self.hook {
            open.push("publishing");
        }
        if !self.scope.play && !self.hook {
            open.push("playing");
        }
        if self.api_token.is_none() {
            open.push("/api");
        }
        open
    }

    /// May `peer` do `action` on `name` carrying `token`? Ok when the action needs no token.
    pub fn authorize(&self, token: Option<&str>, action: AuthAction, name: &str, peer: IpAddr) -> Result<(), Denied> {
        match &self.key {
            Some(k) if self.scope.requires(action) => k.authorize(token, action, name, peer, unix_now()),
            _ => Ok(()),
        }
    }

    /// Does `token` itself allow `action` on `name` (tokens on, and this one valid)? With
    /// an auth hook too, such a request needs no hook call.
    pub fn token_grants(&self, token: Option<&str>, action: AuthAction, name: &str, peer: IpAddr) -> bool {
        match (&self.key, token) {
            (Some(k), Some(_)) => k.authorize(token, action, name, peer, unix_now()).is_ok(),
            _ => false,
        }
    }

    /// Is there a valid token with this RTMP connect (tokens on)?
    pub fn connect_token_valid(&self, token: Option<&str>, peer: IpAddr) -> bool {
        match (&self.key, token) {
            (Some(k), Some(t)) => k.check_connect(t, peer, unix_now()).is_ok(),
            _ => false,
        }
    }

    /// A token presented with an RTMP connect: if there is one and tokens are on, it must
    /// be genuine, unexpired and for this address.
    pub fn check_connect(&self, token: Option<&str>, peer: IpAddr) -> Result<(), Denied> {
        match (&self.key, token) {
            (Some(k), Some(t)) if self.scope.publish || self.scope.play => k.check_connect(t, peer, unix_now()).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn bearer_ok(expected: Option<&[u8]>, authorization: Option<&str>) -> bool {
        match expected {
            None => true,
            Some(want) => authorization.and_then(auth::bearer).is_some_and(|got| auth::secret_eq(got.as_bytes(), want)),
        }
    }

    /// `/api/*` (and control routes): the bearer token of `--api-token`, if set.
    pub fn api_ok(&self, authorization: Option<&str>) -> bool {
        Self::bearer_ok(self.api_token.as_deref(), authorization)
    }

    /// May `peer` start or stop pushes? They make this server connect anywhere and send
    /// a stream there: without `--api-token`, only from this host (loopback).
    pub fn push_api_ok(&self, authorization: Option<&str>, peer: IpAddr) -> Result<(), &'static str> {
        match &self.api_token {
            Some(_) if self.api_ok(authorization) => Ok(()),
            Some(_) => Err("/api needs Authorization: Bearer TOKEN (--api-token)"),
            None if peer.is_loopback() => Ok(()),
            None => Err("starting or stopping pushes needs --api-token (without it only from this host)"),
        }
    }

    pub fn metrics_ok(&self, authorization: Option<&str>) -> bool {
        Self::bearer_ok(self.metrics_token.as_deref(), authorization)
    }

    /// A browser's `Origin` against `--allowed-origin` (no list: every origin; no
    /// header: not a browser page, allowed).
    pub fn origin_ok(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.origins.is_empty() => true,
            None => true,
            Some(o) => self.origins.iter().any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/'))),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a WHIP response: `*` without a list,
    /// the request's origin when listed, none otherwise.
    pub fn cors_origin(&self, origin: Option<&str>) -> Option<String> {
        if self.origins.is_empty() {
            return Some("*".into());
        }
        origin.filter(|o| self.origin_ok(Some(o))).map(str::to_owned)
    }

    pub fn whip_register(&self, resource: &str, worker: usize, name: Arc<str>) {
        if let Ok(mut m) = self.whip.lock() {
            m.insert(resource.to_owned(), (worker, name));
        }
    }

    pub fn whip_forget(&self, resource: &str) {
        if let Ok(mut m) = self.whip.lock() {
            m.remove(resource);
        }
    }

    /// The worker owning WHIP session `resource`, if it exists and publishes `name`.
    pub fn whip_owner(&self, name: &str, resource: &str) -> Option<usize> {
        let m = self.whip.lock().ok()?;
        m.get(resource).filter(|(_, n)| &**n == name).map(|(w, _)| *w)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn access(api_token: Option<&str>) -> Access {
        Access {
            key: None,
            scope: AuthScope::default(),
            api_token: api_token.map(|t| t.as_bytes().to_vec()),
            metrics_token: None,
            origins: Vec::new(),
            hook: false,
            whip: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn pushes_need_the_api_token_or_loopback() {
        let lan: IpAddr = "10.0.0.7".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let open = access(None);
        assert!(open.push_api_ok(None, lo).is_ok());
        assert!(open.push_api_ok(None, "::1".parse().unwrap()).is_ok());
        assert!(open.push_api_ok(None, lan).unwrap_err().contains("--api-token"));
        let closed = access(Some("s3cret-token"));
        assert!(closed.push_api_ok(Some("Bearer s3cret-token"), lan).is_ok());
        assert!(closed.push_api_ok(None, lo).is_err());
        assert!(closed.push_api_ok(Some("Bearer nope"), lan).is_err());
    }
}
