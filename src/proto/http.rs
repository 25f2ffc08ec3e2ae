//! HTTP/1.1 request head parser (RFC 9112 §2–§5), sans-IO and bounded.
//!
//! Implemented: request line, header fields, Content-Length bodies.
//! Not implemented: chunked request bodies (answered 411 by the caller),
//! pipelining beyond one request per parse call.

/// Largest request head we accept (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields we keep.
pub const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    HeadTooLarge,
    BadRequestLine,
    BadHeader,
    TooManyHeaders,
    BadContentLength,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HttpError::HeadTooLarge => "request head larger than 16 KiB",
            HttpError::BadRequestLine => "malformed request line",
            HttpError::BadHeader => "malformed header field",
            HttpError::TooManyHeaders => "more than 64 header fields",
            HttpError::BadContentLength => "invalid Content-Length",
        })
    }
}

/// A parsed request head borrowing from the input.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: Vec<(&'a str, &'a str)>,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
    pub content_length: usize,
}

impl<'a> Request<'a> {
    /// Case-insensitive header lookup (first occurrence).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// Parse a request head from the front of `input`. `Ok(None)` = need more bytes.
pub fn parse_request(input: &[u8]) -> Result<Option<Request<'_>>, HttpError> {
    let Some(end) = find_head_end(input) else {
        return if input.len() > MAX_HEAD { Err(HttpError::HeadTooLarge) } else { Ok(None) };
    };
    if end > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(input.get(..end).unwrap_or(&[])).map_err(|_| HttpError::BadRequestLine)?;
    let mut lines = head.split("\r\n");
    let line = lines.next().ok_or(HttpError::BadRequestLine)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadRequestLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) || !version.starts_with("HTTP/1.") {
        return Err(HttpError::BadRequestLine);
    }
    if !target.starts_with('/') && target != "*" {
        return Err(HttpError::BadRequestLine);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = Vec::new();
    let mut content_length = 0usize;
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let (k, v) = l.split_once(':').ok_or(HttpError::BadHeader)?;
        if k.is_empty() || k.bytes().any(|b| b == b' ' || b == b'\t') {
            return Err(HttpError::BadHeader);
        }
        let v = v.trim_matches(|c| c == ' ' || c == '\t');
        if k.eq_ignore_ascii_case("content-length") {
            content_length = v.parse().map_err(|_| HttpError::BadContentLength)?;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::TooManyHeaders);
        }
        headers.push((k, v));
    }
    Ok(Some(Request { method, path, query, headers, head_len: end, content_length }))
}

fn find_head_end(input: &[u8]) -> Option<usize> {
    input.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Build a complete response with `Connection: close`.
pub fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_with_query_and_headers() {
        let r = parse_request(b"GET /api/streams?x=1 HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\nrest").unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/streams");
        assert_eq!(r.query, Some("x=1"));
        assert_eq!(r.header("host"), Some("a"));
        assert_eq!(r.header("x-y"), Some("z"));
        assert_eq!(r.head_len, 52);
    }

    #[test]
    fn incomplete_then_errors() {
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        assert_eq!(parse_request(b"GARBAGE\r\n\r\n"), Err(HttpError::BadRequestLine));
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), Err(HttpError::BadHeader));
        assert_eq!(
            parse_request(b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(HttpError::BadContentLength)
        );
        let big = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(parse_request(&big), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn every_prefix_is_safe() {
        let req = b"POST /whip/s1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        for i in 0..req.len() {
            let _ = parse_request(&req[..i]);
        }
    }
}
