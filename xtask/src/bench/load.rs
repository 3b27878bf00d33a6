//! A small HTTP/1.1 load generator for loopback: keep-alive connections, one request in flight
//! on each, counting complete 200 responses. Enough to measure a server on this machine without
//! installing `wrk`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The requests per second `connections` keep-alive connections get from `path` in `length`.
pub fn requests_per_second(
    address: SocketAddr,
    path: &str,
    connections: usize,
    length: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let stop = Arc::clone(&stop);
            let path = path.to_owned();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let stream = TcpStream::connect(address)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut connection = Connection::new(stream)?;
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = connection.get(&path)?;
                    if status != 200 {
                        bail!("{path} answered {status} under load");
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

    fn get(&mut self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: xtask-bench\r\n\r\n"
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
