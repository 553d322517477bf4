//! Just enough HTTP/1.1 for Docker's plugin protocol: POST requests with a
//! JSON body (Content-Length or chunked), keep-alive, JSON answers.

use std::io::{BufRead, BufReader, Read, Write};

/// Bodies are small JSON documents; anything larger is refused.
const MAX_BODY: usize = 4 << 20;
const MAX_HEADER_LINES: usize = 100;

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connection closed")]
    Closed,
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn line(r: &mut impl BufRead) -> Result<String, HttpError> {
    let mut s = String::new();
    // A line longer than 8 KiB is not HTTP from dockerd.
    let n = r.by_ref().take(8192).read_line(&mut s)?;
    if n == 0 {
        return Err(HttpError::Closed);
    }
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

pub fn read_request<R: Read>(r: &mut BufReader<R>) -> Result<Request, HttpError> {
    let start = line(r)?;
    let mut parts = start.split_whitespace();
    let (Some(method), Some(path), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(format!("request line {start:?}")));
    };
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for i in 0.. {
        if i > MAX_HEADER_LINES {
            return Err(HttpError::Malformed("too many headers".into()));
        }
        let h = line(r)?;
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            return Err(HttpError::Malformed(format!("header {h:?}")));
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| HttpError::Malformed(format!("Content-Length {value:?}")))?,
                )
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        let n = length.unwrap_or(0);
        if n > MAX_BODY {
            return Err(HttpError::Malformed(format!(
                "body of {n} bytes is too large"
            )));
        }
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        b
    };
    Ok(Request {
        method: method.into(),
        path: path.into(),
        body,
    })
}

fn read_chunked<R: Read>(r: &mut BufReader<R>) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let size_line = line(r)?;
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            while !line(r)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::Malformed("body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        line(r)?;
    }
}

pub fn write_response(w: &mut impl Write, status: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    write!(w, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\r\n", body.len())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies_and_keeps_alive() {
        let raw = b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nAccept: x\r\n\r\nPOST /NetworkDriver.Join HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /X HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        let mut r = BufReader::new(&raw[..]);
        let a = read_request(&mut r).unwrap();
        assert_eq!((a.path.as_str(), a.body.len()), ("/Plugin.Activate", 0));
        let b = read_request(&mut r).unwrap();
        assert_eq!(
            (b.path.as_str(), b.body.as_slice()),
            ("/NetworkDriver.Join", &b"{}"[..])
        );
        let c = read_request(&mut r).unwrap();
        assert_eq!(c.body, b"{\"a\":1}");
        assert!(matches!(read_request(&mut r), Err(HttpError::Closed)));
    }

    #[test]
    fn garbage_is_malformed() {
        let mut r = BufReader::new(&b"hello\r\n\r\n"[..]);
        assert!(matches!(read_request(&mut r), Err(HttpError::Malformed(_))));
        let mut r = BufReader::new(&b"POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n"[..]);
        assert!(matches!(read_request(&mut r), Err(HttpError::Malformed(_))));
    }
}
