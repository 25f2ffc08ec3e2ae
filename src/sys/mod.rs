//! The only place besides `src/sync/` where `unsafe` may appear: thin wrappers
//! over OS calls that the standard library and our dependencies do not offer.
#![allow(unsafe_code)]

use std::io;

/// Raise this process's open-file soft limit to its hard limit (every connection,
/// listener and UDP socket is a descriptor; the common default of 1024 lets ~1000
/// idle connections lock everyone out). Returns (previous soft, new soft).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable `rlimit` for the duration of the call, and
    // RLIMIT_NOFILE is a valid resource; getrlimit writes only into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: `want` is a valid `rlimit` read by the call; raising the soft limit
        // up to the hard limit needs no privilege and affects only this process.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = want;
    }
    Ok((before, lim.rlim_cur))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn soft_limit_ends_at_the_hard_limit() {
        let (before, after) = super::raise_nofile_limit().unwrap();
        assert!(after >= before);
        let (again, same) = super::raise_nofile_limit().unwrap();
        assert_eq!((again, same), (after, after), "idempotent");
    }
}
