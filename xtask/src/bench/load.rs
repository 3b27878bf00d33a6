//! A small HTTP/1.1 load generator for loopback: keep-alive connections, one request in flight
//! on each, counting complete 200 responses. Enough to measure a server on this machine without
//! installing `wrk`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One request the load repeats.
#[derive(Clone)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    /// A JSON body, or empty.
    pub body: String,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request {
            method: "GET",
            path: path.to_owned(),
            headers: String::new(),
            body: String::new(),
        }
    }
}

/// The requests per second `connections` keep-alive connections get from `path` in `length`.
pub fn requests_per_second(
    address: SocketAddr,
    path: &str,
    connections: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    requests_per_second_of(address, &Request::get(path), connections, length)
}

/// The 200s per second `connections` keep-alive connections get for `request` in `length`.
pub fn requests_per_second_of(
    address: SocketAddr,
    request: &Request,
    connections: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let stop = Arc::clone(&stop);
            let request = request.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let stream = TcpStream::connect(address)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut connection = Connection::new(stream)?;
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = connection.send(&request)?;
                    if status != 200 {
                        bail!("{} answered {status} under load", request.path);
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(length);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        total += worker.join().expect("a load worker panicked")?;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn new(stream: TcpStream) -> anyhow::Result<Connection> {
        Ok(Connection {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(16 * 1024, stream),
        })
    }

    fn send(&mut self, request: &Request) -> anyhow::Result<(u16, Vec<u8>)> {
        let length = if request.body.is_empty() && request.method == "GET" {
            String::new()
        } else {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                request.body.len()
            )
        };
        write!(
            self.writer,
            "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: xtask-bench\r\n{}{length}\r\n{}",
            request.method, request.path, request.headers, request.body
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("not an HTTP response: {line:?}"))?;
        let mut length = 0;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed mid-response");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}
