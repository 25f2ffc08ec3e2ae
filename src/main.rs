//! `rtcbridge`: parse flags, start the workers, wait for SIGINT/SIGTERM, stop.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rtcbridge::config::Config;

/// `rtcbridge token --secret FILE --publish NAME --ttl 1h`: print one signed token.
fn token_command(args: Vec<std::ffi::OsString>) -> ExitCode {
    use rtcbridge::relay::auth::{AuthAction, TokenClaims, TokenKey};
    let cmd = rtcbridge::config::TokenCmd::parse_from(args);
    let ttl = match rtcbridge::config::parse_ttl(&cmd.ttl) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rtcbridge token: {e}");
            return ExitCode::from(2);
        }
    };
    let key = match std::fs::read(&cmd.secret).map_err(|e| e.to_string()).and_then(|b| TokenKey::from_file_bytes(&b).map_err(str::to_owned)) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("rtcbridge token: --secret {}: {e}", cmd.secret.display());
            return ExitCode::from(2);
        }
    };
    let (action, name) = match (cmd.publish, cmd.play) {
        (Some(n), _) => (AuthAction::Publish, n),
        (None, Some(n)) => (AuthAction::Play, n),
        (None, None) => {
            eprintln!("rtcbridge token: --publish NAME or --play NAME");
            return ExitCode::from(2);
        }
    };
    let expires_unix = rtcbridge::runtime::access::unix_now().saturating_add(ttl);
    println!("{}", key.sign(&TokenClaims { action, name, expires_unix, ip: cmd.ip }));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "token") {
        return token_command(args.into_iter().skip(1).collect());
    }
    let mut cfg = Config::parse_from(args);
    if let Err(e) = cfg.validate() {
        eprintln!("rtcbridge: {e}");
        return ExitCode::from(2);
    }
    rtcbridge::log::set_level(cfg.log);
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rtcbridge: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls_listeners: String = [("https", cfg.https), ("rtmps", cfg.rtmps)]
        .iter()
        .filter_map(|(name, a)| a.map(|a| format!(" {name} {a}")))
        .collect();
    let summary = format!(
        "rtcbridge {}: rtmp {} http {}{tls_listeners} workers {}{}",
        env!("CARGO_PKG_VERSION"),
        cfg.rtmp,
        cfg.http,
        cfg.worker_count(),
        if cfg.no_pin { " (not pinned)" } else { " (pinned)" }
    );
    // Every connection is a descriptor: take the hard limit, and say what it is.
    let (cfg_rtmp, cfg_http) = (cfg.rtmp, cfg.http);
    let nofile = rtcbridge::sys::raise_nofile_limit();
    let server = match rtcbridge::runtime::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rtcbridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    rtcbridge::info!("{summary}");
    match nofile {
        Ok((before, after)) if after > before => rtcbridge::info!("open-file limit raised from {before} to {after} (the hard limit)"),
        Ok((_, after)) => rtcbridge::info!("open-file limit {after} (already the hard limit)"),
        Err(e) => rtcbridge::warn!("open-file limit: cannot read or raise it: {e}"),
    }
    let open = server.open_parts();
    let exposed = [cfg_rtmp, cfg_http].iter().any(|a| !a.ip().is_loopback());
    if exposed && !open.is_empty() {
        rtcbridge::warn!(
            "no access control for {} on a non-loopback address: anyone who reaches the ports may use them (README \"Security\": --auth-secret, --api-token)",
            open.join(", ")
        );
    }

    let sig = signals.forever().next().unwrap_or(0);
    rtcbridge::info!("signal {sig}: closing every connection and stopping");
    let stopped = server.shutdown(Duration::from_millis(1800));
    if !stopped {
        rtcbridge::error!("workers did not stop in time");
    }
    // Lines are written by the logger thread: let it finish before exiting.
    rtcbridge::log::flush();
    if stopped {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
