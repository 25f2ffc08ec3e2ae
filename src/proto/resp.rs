//! RESP2, the Redis protocol: commands out, replies in, sans-IO. Used by the
//! cluster's control thread (one blocking connection per process) to keep the
//! stream directory in Redis.
//!
//! Bounds (a reply comes from the network): a bulk string at most
//! [`MAX_BULK`] bytes, an array at most [`MAX_ARRAY`] elements, nesting at most
//! [`MAX_DEPTH`]; anything beyond is an error, not an allocation.

use std::fmt;

pub const MAX_BULK: usize = 1 << 20;
pub const MAX_ARRAY: usize = 100_000;
pub const MAX_DEPTH: usize = 8;
/// A simple string, error or integer line is at most this long.
const MAX_LINE: usize = 64 * 1024;

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    Int(i64),
    /// `$-1` is `Nil`.
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) => Some(b),
            Reply::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// A type byte that is not `+ - : $ *`.
    BadType(u8),
    /// A length or integer that does not parse, or a missing CRLF.
    BadLine,
    TooLarge,
    TooDeep,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::BadType(b) => write!(f, "not a RESP reply (type byte 0x{b:02x})"),
            RespError::BadLine => f.write_str("malformed RESP line"),
            RespError::TooLarge => f.write_str("RESP reply over its size limit"),
            RespError::TooDeep => f.write_str("RESP reply nested too deep"),
        }
    }
}

impl std::error::Error for RespError {}

/// Append a command (an array of bulk strings) to `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parse one reply from the front of `buf`: `Ok(None)` when it is not complete
/// yet, else the reply and the bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(at..).unwrap_or(&[]);
    let limit = rest.len().min(MAX_LINE + 2);
    match rest.get(..limit).and_then(|r| r.windows(2).position(|w| w == b"\r\n")) {
        Some(i) => Ok(rest.get(..i).map(|l| (l, at + i + 2))),
        None if rest.len() > MAX_LINE => Err(RespError::TooLarge),
        None => Ok(None),
    }
}

fn int(l: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(l).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(RespError::BadLine)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::TooDeep);
    }
    let Some(&t) = buf.get(at) else { return Ok(None) };
    let Some((l, next)) = line(buf, at + 1)? else { return Ok(None) };
    let text = || String::from_utf8_lossy(l).into_owned();
    match t {
        b'+' => Ok(Some((Reply::Simple(text()), next))),
        b'-' => Ok(Some((Reply::Error(text()), next))),
        b':' => Ok(Some((Reply::Int(int(l)?), next))),
        b'$' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some((Reply::Nil, next)));
            }
            let n = usize::try_from(n).map_err(|_| RespError::BadLine)?;
            if n > MAX_BULK {
                return Err(RespError::TooLarge);
            }
            let end = next + n;
            let Some(body) = buf.get(next..end) else { return Ok(None) };
            match buf.get(end..end + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some((Reply::Bulk(body.to_vec()), end + 2))),
                Some(_) => Err(RespError::BadLine),
            }
        }
        b'*' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some((Reply::Nil, next)));
            }
            let n = usize::try_from(n).map_err(|_| RespError::BadLine)?;
            if n > MAX_ARRAY {
                return Err(RespError::TooLarge);
            }
            // Each element takes at least 3 bytes: do not reserve for what cannot be there.
            let mut items = Vec::with_capacity(n.min(buf.len().saturating_sub(next) / 3));
            let mut pos = next;
            for _ in 0..n {
                let Some((r, p)) = parse_at(buf, pos, depth + 1)? else { return Ok(None) };
                items.push(r);
                pos = p;
            }
            Ok(Some((Reply::Array(items), pos)))
        }
        other => Err(RespError::BadType(other)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_parses() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b"v v"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv v\r\n");
        assert_eq!(parse_reply(b"+OK\r\n").unwrap(), Some((Reply::Simple("OK".into()), 5)));
        assert_eq!(parse_reply(b"-ERR no\r\n").unwrap(), Some((Reply::Error("ERR no".into()), 9)));
        assert_eq!(parse_reply(b":42\r\n").unwrap(), Some((Reply::Int(42), 5)));
        assert_eq!(parse_reply(b"$-1\r\n").unwrap(), Some((Reply::Nil, 5)));
        assert_eq!(parse_reply(b"$3\r\nabc\r\n").unwrap(), Some((Reply::Bulk(b"abc".to_vec()), 9)));
        let arr = b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n";
        assert_eq!(
            parse_reply(arr).unwrap(),
            Some((Reply::Array(vec![Reply::Bulk(b"a".to_vec()), Reply::Array(vec![Reply::Int(1)])]), arr.len()))
        );
        // Incomplete at every cut.
        for cut in 0..arr.len() {
            assert_eq!(parse_reply(&arr[..cut]).unwrap(), None, "cut {cut}");
        }
        assert_eq!(parse_reply(b"?x\r\n"), Err(RespError::BadType(b'?')));
        assert_eq!(parse_reply(b"$99999999\r\n"), Err(RespError::TooLarge));
        assert_eq!(parse_reply(b"*99999999\r\n"), Err(RespError::TooLarge));
        assert_eq!(parse_reply(b"$3\r\nabcXY"), Err(RespError::BadLine));
        let deep = b"*1\r\n".repeat(20);
        assert_eq!(parse_reply(&deep), Err(RespError::TooDeep));
    }
}
