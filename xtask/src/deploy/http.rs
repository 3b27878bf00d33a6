//! The HTTP client `health` and `smoke` use: HTTP/1.1 on the standard library for `http://`
//! (the server's own port), and the system's `curl` for `https://` (a TLS proxy in front of it),
//! with the system's CA roots or `--cacert FILE`.
//!
//! Nothing secret goes on a command line: curl reads its options, headers and body from its
//! standard input (`--config -`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::util::env_file;

/// Where the server answers: `http[s]://host[:port][/prefix]`.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub prefix: String,
    /// For https: the CA certificate(s) to trust instead of the system's.
    pub cacert: Option<PathBuf>,
}

impl BaseUrl {
    /// `--url` when given, else where the server of `--env-file` answers on this host
    /// (`http://127.0.0.1:<SAULPOS_SERVER_PORT>`, 8080 without one), with `--cacert`.
    pub fn from_flags(
        url: Option<&str>,
        env_file: Option<&Path>,
        cacert: Option<PathBuf>,
    ) -> anyhow::Result<BaseUrl> {
        let url = match (url, env_file) {
            (Some(url), _) => url.to_owned(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "--env-file {}: cannot read it; give the environment's saulpos.env",
                        path.display()
                    )
                })?;
                env_file::local_url(&text)
            }
            (None, None) => "http://127.0.0.1:8080".to_owned(),
        };
        BaseUrl::parse(&url)?.with_cacert(cacert)
    }

    pub fn parse(text: &str) -> anyhow::Result<BaseUrl> {
        let hint =
            "give the server's base URL, e.g. http://localhost:8080 or https://pos.example.com";
        let (https, rest) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => bail!("--url {text:?} is not an http:// or https:// URL; {hint}"),
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
            _ => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            bail!("--url {text:?} names no host; {hint}");
        }
        Ok(BaseUrl {
            https,
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
            cacert: None,
        })
    }

    /// Trusts the CA certificate(s) in `cacert` for https; refuses it for http.
    pub fn with_cacert(mut self, cacert: Option<PathBuf>) -> anyhow::Result<BaseUrl> {
        if let Some(path) = &cacert {
            if !self.https {
                bail!(
                    "--cacert {} is for https:// URLs; this one is http://",
                    path.display()
                );
            }
            if !path.is_file() {
                bail!(
                    "--cacert {} is not a file: give the PEM file of the CA that signed the server's certificate",
                    path.display()
                );
            }
        }
        self.cacert = cacert;
        Ok(self)
    }

    /// The full URL of `path`, for messages.
    pub fn show(&self, path: &str) -> String {
        format!(
            "{}://{}:{}{}{path}",
            if self.https { "https" } else { "http" },
            self.host,
            self.port,
            self.prefix
        )
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
    request_with(base, method, path, json_body, None, timeout)
}

/// One request with `Authorization: Bearer <token>` when a token is given.
pub fn request_with(
    base: &BaseUrl,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    bearer: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    if base.https {
        return curl(base, method, path, json_body, bearer, timeout);
    }
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
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
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

/// A string in curl's config file syntax.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An https request through the system's curl, every option on its standard input.
fn curl(
    base: &BaseUrl,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    bearer: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let url = base.show(path);
    let mut config = format!(
        "url = {}\nrequest = {}\nsilent\nshow-error\nmax-time = {:.3}\noutput = \"-\"\nwrite-out = \"\\n%{{http_code}}\"\nproto = \"=https\"\nheader = \"Accept: application/json\"\nuser-agent = \"cargo-xtask\"\n",
        quoted(&url),
        quoted(method),
        timeout.as_secs_f64()
    );
    if let Some(cacert) = &base.cacert {
        config.push_str(&format!("cacert = {}\n", quoted(&cacert.to_string_lossy())));
    }
    if let Some(token) = bearer {
        config.push_str(&format!(
            "header = {}\n",
            quoted(&format!("Authorization: Bearer {token}"))
        ));
    }
    if let Some(body) = json_body {
        config.push_str("header = \"Content-Type: application/json\"\n");
        config.push_str(&format!("data-binary = {}\n", quoted(body)));
    }
    let mut child = Command::new("curl")
        .args(["--config", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run curl, which https:// URLs need; install it (apt-get install curl)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(config.as_bytes())
        .context("cannot hand the request to curl")?;
    let output = child.wait_with_output().context("curl did not finish")?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr)
            .trim()
            .trim_start_matches("curl: ")
            .to_owned();
        let said = said.lines().last().unwrap_or_default();
        match output.status.code() {
            Some(60) | Some(35) | Some(58) | Some(77) | Some(83) => bail!(
                "{url}: the TLS certificate does not check out ({said}); give --cacert FILE with the CA that signed it"
            ),
            Some(28) => bail!(
                "{url}: no complete answer within {} ms",
                timeout.as_millis()
            ),
            _ => bail!("{url}: {said}"),
        }
    }
    let raw = output.stdout;
    let split = raw
        .iter()
        .rposition(|byte| *byte == b'\n')
        .context("curl printed no status")?;
    let status = std::str::from_utf8(&raw[split + 1..])
        .ok()
        .and_then(|code| code.trim().parse().ok())
        .with_context(|| format!("{url}: curl printed no status"))?;
    Ok(Response {
        status,
        body: raw[..split].to_vec(),
    })
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
        let url = BaseUrl::parse("https://pos.example.com/").unwrap();
        assert_eq!((url.https, url.port), (true, 443));
        assert_eq!(url.show("/x"), "https://pos.example.com:443/x");
        assert!(
            BaseUrl::parse("http://x:1")
                .unwrap()
                .with_cacert(Some("/etc/hostname".into()))
                .is_err()
        );
        for bad in [
            "localhost:8080",
            "ftp://x",
            "http://:80",
            "http://u:p@x:1",
            "http://x:port",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn curl_config_strings_are_quoted() {
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
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
