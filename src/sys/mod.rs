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

/// `UDP_SEGMENT` (linux/udp.h): the cmsg that makes one `sendmsg` carry several UDP
/// datagrams of one size to one address (UDP GSO, Linux 4.18).
const UDP_SEGMENT: libc::c_int = 103;

/// Send `buf` to `to` as datagrams of `seg` bytes each (the last may be shorter) in one
/// `sendmsg` with UDP GSO: the kernel splits it, one routing and socket pass for all.
/// An error of `EIO`/`EINVAL`/`ENOPROTOOPT` means the kernel or device cannot: send
/// them one by one instead.
pub fn send_segments(sock: &impl std::os::fd::AsRawFd, buf: &[u8], seg: u16, to: std::net::SocketAddr) -> io::Result<usize> {
    let addr = socket2::SockAddr::from(to);
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // Aligned for `cmsghdr`, large enough for one header and a u16 (CMSG_SPACE(2) is 24
    // on 64-bit Linux).
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
    let (space, len) = unsafe { (libc::CMSG_SPACE(2) as usize, libc::CMSG_LEN(2) as usize) };
    if space > std::mem::size_of_val(&control) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `control`, `space` bytes long and 8-aligned, so
    // CMSG_FIRSTHDR returns a pointer inside it (non-null: controllen ≥ one header);
    // the header and its 2 data bytes lie within `space`; the data may be unaligned,
    // so it is written with write_unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, seg);
    }
    // SAFETY: every pointer in `msg` (name, iov → buf, control) is valid for reads for
    // the duration of the call; sendmsg does not keep them.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    #[test]
    fn segments_arrive_as_separate_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        for i in 0..3u8 {
            buf.extend(std::iter::repeat_n(i, 100));
        }
        buf.extend(std::iter::repeat_n(9u8, 40));
        match super::send_segments(&tx, &buf, 100, rx.local_addr().unwrap()) {
            Ok(n) => assert_eq!(n, buf.len()),
            // A kernel without UDP GSO: the caller falls back; nothing more to check.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)) => return,
            Err(e) => panic!("{e}"),
        }
        let mut got = Vec::new();
        let mut b = [0u8; 2048];
        for _ in 0..4 {
            let n = rx.recv(&mut b).unwrap();
            got.push(b[..n].to_vec());
        }
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 100, 100, 40]);
        assert!(got[1].iter().all(|&x| x == 1) && got[3].iter().all(|&x| x == 9));
    }

    #[test]
    fn soft_limit_ends_at_the_hard_limit() {
        let (before, after) = super::raise_nofile_limit().unwrap();
        assert!(after >= before);
        let (again, same) = super::raise_nofile_limit().unwrap();
        assert_eq!((again, same), (after, after), "idempotent");
    }
}
