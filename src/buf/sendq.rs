//! Per-connection send queue: small owned headers and references into shared
//! media messages, turned into iovecs for one `writev` per flush.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;


/// iovecs per `writev` call (well under Linux's IOV_MAX of 1024).
pub const MAX_IOVECS: usize = 64;

const INLINE: usize = 22;

enum Seg {
    /// Small per-player bytes (chunk headers) without an allocation.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Control messages, command replies.
    Owned(Vec<u8>),
    /// A range of shared, immutable bytes (a media message's chunked body).
    Shared { bytes: Arc<[u8]>, start: u32, end: u32 },
}

impl Seg {
    fn bytes(&self) -> &[u8] {
        match self {
            Seg::Inline { len, bytes } => bytes.get(..*len as usize).unwrap_or(&[]),
            Seg::Owned(v) => v,
            Seg::Shared { bytes, start, end } => bytes.get(*start as usize..*end as usize).unwrap_or(&[]),
        }
    }
}

/// Bytes waiting to be written to one socket, in order.
#[derive(Default)]
pub struct SendQueue {
    segs: VecDeque<Seg>,
    /// Bytes of the front segment already written.
    front_off: usize,
    len: usize,
}

impl SendQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queued bytes not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue a copy of small bytes (inline when they fit).
    pub fn push_bytes(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            if let Some(dst) = bytes.get_mut(..b.len()) {
                dst.copy_from_slice(b);
            }
            self.segs.push_back(Seg::Inline { len: b.len() as u8, bytes });
        } else {
            self.segs.push_back(Seg::Owned(b.to_vec()));
        }
    }

    /// Queue an owned buffer without copying.
    pub fn push_vec(&mut self, v: Vec<u8>) {
        if v.is_empty() {
            return;
        }
        self.len += v.len();
        self.segs.push_back(Seg::Owned(v));
    }

    /// Queue a range of shared bytes (a message's chunked body; refcount +1, no copy).
    pub fn push_shared(&mut self, bytes: &Arc<[u8]>, start: usize, end: usize) {
        if end <= start || end > bytes.len() {
            return;
        }
        self.len += end - start;
        self.segs.push_back(Seg::Shared { bytes: Arc::clone(bytes), start: start as u32, end: end as u32 });
    }

    /// Drop everything queued (connection closing).
    pub fn clear(&mut self) {
        self.segs.clear();
        self.front_off = 0;
        self.len = 0;
    }

    /// Write as much as the socket takes with `writev`, `MAX_IOVECS` segments at a
    /// time. Returns bytes written; `Ok` with the queue non-empty means the socket
    /// is full (wait for writable).
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.segs.is_empty() {
            let mut iov: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
            let mut n = 0;
            for (i, seg) in self.segs.iter().take(MAX_IOVECS).enumerate() {
                let b = seg.bytes();
                let b = if i == 0 { b.get(self.front_off..).unwrap_or(&[]) } else { b };
                if let Some(slot) = iov.get_mut(n) {
                    *slot = IoSlice::new(b);
                    n += 1;
                }
            }
            let wrote = match w.write_vectored(iov.get(..n).unwrap_or(&[])) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket wrote 0 bytes")),
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += wrote;
            self.advance(wrote);
        }
        Ok(total)
    }

    fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.segs.front() else { break };
            let left = front.bytes().len() - self.front_off;
            if n >= left {
                n -= left;
                self.segs.pop_front();
                self.front_off = 0;
            } else {
                self.front_off += n;
                n = 0;
            }
        }
        if self.segs.is_empty() && self.segs.capacity() > 256 {
            self.segs.shrink_to(16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A writer that accepts at most `cap` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
    }
    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.cap);
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_segments_in_order_across_partial_writes() {
        let body: Arc<[u8]> = vec![7u8; 300].into();
        let mut q = SendQueue::new();
        q.push_bytes(b"hdr");
        q.push_shared(&body, 0, body.len());
        q.push_vec(vec![9u8; 40]);
        let expect_len = 3 + body.len() + 40;
        assert_eq!(q.len(), expect_len);
        let mut w = Trickle { out: Vec::new(), cap: 7 };
        q.write_to(&mut w).unwrap();
        assert!(q.is_empty());
        assert_eq!(w.out.len(), expect_len);
        assert_eq!(&w.out[..3], b"hdr");
        assert_eq!(&w.out[3..3 + body.len()], &body[..]);
    }

    #[test]
    fn chunk_payloads_reassemble_the_message() {
        let payload: Arc<[u8]> = (0..1000u32).map(|i| i as u8).collect::<Vec<u8>>().into();
        let pre = crate::proto::rtmp::chunk::Prechunked::new(&payload, 128, 4);
        let mut back = Vec::new();
        for i in 0..pre.chunk_count() {
            back.extend_from_slice(pre.chunk_payload(i));
        }
        assert_eq!(&back[..], &payload[..]);
        let small = crate::proto::rtmp::chunk::Prechunked::new(&payload, 4096, 4);
        assert!(Arc::ptr_eq(&small.bytes, &payload), "a one-chunk body is the payload itself");
    }
}
