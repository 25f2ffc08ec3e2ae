//! A connection's byte stream: plain TCP or TLS over TCP, behind one type so
//! the protocol code above does not care which.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::tls::TlsStream;

pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Io {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Io::Plain(s) => s.local_addr(),
            Io::Tls(t) => t.tcp().local_addr(),
        }
    }

    /// Push TLS records rustls still holds (after the socket was full).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(_) => Ok(()),
            Io::Tls(t) => t.write_tls_pending(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Io::Tls(_))
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(t) => t.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write_vectored(bufs),
            Io::Tls(t) => t.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(t) => t.flush(),
        }
    }
}

impl Source for Io {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.register(r, t, i),
            Io::Tls(x) => x.tcp_mut().register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.reregister(r, t, i),
            Io::Tls(x) => x.tcp_mut().reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.deregister(r),
            Io::Tls(x) => x.tcp_mut().deregister(r),
        }
    }
}
