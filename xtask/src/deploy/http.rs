//! A small HTTP/1.1 client on the standard library, for `http://` URLs that operators point
//! `health` and `smoke` at (the server's own port, or a plain-HTTP proxy in front of it).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

/// Where the server answers: `http://host[:port][/prefix]`.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(text: &str) -> anyhow::Result<BaseUrl> {
        let hint = "give the server's base URL, e.g. http://localhost:8080";
        let Some(rest) = text.strip_prefix("http://") else {
            if text.starts_with("https://") {
                bail!(
                    "--url {text:?}: https is not supported; point at the server's own http port, e.g. http://localhost:8080"
                );
            }
            bail!("--url {text:?} is not an http:// URL; {hint}");
        };
        let (authority, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') {
            bail!("--url {text:?}: credentials do not belong in the URL");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                let port = port
                    .parse()
                    .with_context(|| format!("--url {text:?}: {port:?} is not a port; {hint}"))?;
                (host, port)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            bail!("--url {text:?} names no host; {hint}");
        }
        Ok(BaseUrl {
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
        })
    }

    /// The full URL of `path`, for messages.
    pub fn show(&self, path: &str) -> String {
        format!("http://{}:{}{}{path}", self.host, self.port, self.prefix)
    }
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("the body is not JSON: {:?}", truncate(&self.text())))
    }
}

/// One request over a fresh connection, all of it bounded by `timeout`.
pub fn request(
    base: &BaseUrl,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let url = base.show(path);
    let address = (base.host.as_str(), base.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", base.host))?
        .next()
        .with_context(|| format!("{} resolves to no address", base.host))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("cannot connect to {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let body = json_body.unwrap_or("");
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: cargo-xtask\r\nAccept: application/json\r\nConnection: close\r\n",
        base.prefix, base.host, base.port
    );
    if json_body.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .with_context(|| format!("cannot send the request to {url}"))?;
    let mut raw = Vec::new();
    stream
        .take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .with_context(|| format!("no complete answer from {url}"))?;
    parse_response(&raw).with_context(|| format!("a malformed answer from {url}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("the headers never end")?;
    let head = std::str::from_utf8(&raw[..end]).context("the headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("transfer-encoding") && value.trim() == "chunked"
        })
    });
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .context("a chunk size line never ends")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).context("a chunk is cut short")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).context("a chunk is cut short")?;
    }
}

/// At most 200 characters of `text`, for messages.
pub fn truncate(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_port_and_prefix_parse_and_others_are_refused() {
        let url = BaseUrl::parse("http://localhost:8080").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("localhost", 8080, "")
        );
        let url = BaseUrl::parse("http://pos.internal/saulpos/").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("pos.internal", 80, "/saulpos")
        );
        assert_eq!(
            url.show("/actuator/health"),
            "http://pos.internal:80/saulpos/actuator/health"
        );
        for bad in [
            "localhost:8080",
            "https://x",
            "http://:80",
            "http://u:p@x:1",
            "http://x:port",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chunked_and_plain_bodies_are_read() {
        let plain =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
        assert_eq!(
            (plain.status, plain.body.as_slice()),
            (503, b"{}".as_slice())
        );
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.body, b"abcde");
    }
}
