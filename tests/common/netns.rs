//! Run a test inside a fresh network namespace that has only loopback
//! (TESTING.md: otherwise Chromium offers this machine's eth0 address and
//! media could leave the host). The test binary re-executes itself for one
//! test inside `ip netns exec`, and the outer run asserts it passed.

use std::path::PathBuf;
use std::process::Command;

use super::tool;

const INSIDE: &str = "RTCBRIDGE_TEST_IN_NETNS";

/// True when the current process already runs in the test's namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Re-run `test_name` of this binary inside a new namespace with only `lo` up.
/// Returns false when already inside (the caller then runs the test body).
pub fn reexec(test_name: &str) -> bool {
    if inside() {
        return false;
    }
    let ip = tool("ip");
    let ns = format!("rtcb-{}-{}", std::process::id(), test_name.len());
    let ok = Command::new(&ip).args(["netns", "add", &ns]).status().map(|s| s.success()).unwrap_or(false);
    assert!(ok, "ip netns add {ns} failed: WebRTC tests need root and iproute2 (run tools/test-all as root)");
    let guard = NsGuard(ns.clone());
    let up = Command::new(&ip).args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]).status();
    assert!(up.map(|s| s.success()).unwrap_or(false), "cannot bring lo up in {ns}");
    // A second loopback address: aiortc's ICE (aioice) skips 127.0.0.1 itself.
    let _ = Command::new(&ip).args(["netns", "exec", &ns, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo"]).status();
    let exe: PathBuf = std::env::current_exe().expect("current test binary");
    let status = Command::new(&ip)
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, &ns)
        .status()
        .expect("run test inside the namespace");
    drop(guard);
    assert!(status.success(), "{test_name} failed inside network namespace {ns} (see its output above)");
    true
}

struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new(tool("ip")).args(["netns", "delete", &self.0]).status();
    }
}

/// Name of the namespace we are in (for nftables rules scoped to it).
pub fn current() -> Option<String> {
    std::env::var(INSIDE).ok()
}
