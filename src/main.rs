//! `rtcbridge`: parse flags, start the workers, wait for SIGINT/SIGTERM, stop.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rtcbridge::config::Config;

fn main() -> ExitCode {
    let mut cfg = Config::parse();
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
    rtcbridge::info!("not built yet: WebRTC playback (playStream), RTMP push to other servers");
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
