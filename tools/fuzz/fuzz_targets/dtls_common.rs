//! Shared by the DTLS fuzz targets (`dtls_server`, `dtls_handshake`): the panic hook
//! that lets the DTLS engine's panics unwind to our guard, and draining a server.
use std::sync::Once;

use rtcbridge::proto::dtls::{DtlsEvent, DtlsServer};

/// Panics inside the DTLS engine (dimpl) are caught by the guard in
/// `src/proto/dtls.rs`, which counts them and fails only that session: let
/// them unwind to it (libfuzzer-sys's hook would abort), with a marker line
/// that `tools/fuzz-all` counts as "guarded". Any other panic still aborts:
/// a crash.
pub fn let_engine_panics_unwind() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("/dimpl-")) {
                eprintln!("fuzz: GUARDED DEPENDENCY PANIC in dimpl (caught, only the session fails): {info}");
            } else {
                fuzzer_hook(info);
            }
        }));
    });
}

/// Take what the server sends; check the keys of a completed handshake.
pub fn drain(s: &mut DtlsServer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(p) = s.poll_transmit() {
        out.push(p);
    }
    while let Some(ev) = s.poll_event() {
        if let DtlsEvent::Connected(keys) = ev {
            let (k, salt) = keys.suite.key_salt_len();
            assert_eq!((keys.remote_key.len(), keys.local_key.len()), (k, k));
            assert_eq!((keys.remote_salt.len(), keys.local_salt.len()), (salt, salt));
        }
    }
    out
}
