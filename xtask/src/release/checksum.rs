//! SHA-256: hashing while writing, hashing files, and `.sha256` files in the format that
//! `sha256sum -c` and `shasum -a 256 -c` accept.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Creates `path` and fills it with `write` through a buffer, hashing on the way, then syncs
/// it; returns its SHA-256 (hex) and size.
pub fn write_hashed_file(
    path: &Path,
    write: impl FnOnce(&mut HashingWriter<io::BufWriter<std::fs::File>>) -> io::Result<()>,
) -> anyhow::Result<(String, u64)> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    write(&mut writer).with_context(|| format!("cannot write {}", path.display()))?;
    let (buffered, sha256, size) = writer.finish();
    let file = buffered
        .into_inner()
        .map_err(|error| error.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok((sha256, size))
}

/// SHA-256 of bytes in memory, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Passes writes through to `inner`, hashing and counting them on the way.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// How many bytes went through so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer, the hex SHA-256 and the byte count of everything written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a reader to its end: hex SHA-256 and size.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = HashingWriter::new(io::sink());
    io::copy(&mut reader, &mut hasher)?;
    let (_, digest, size) = hasher.finish();
    Ok((digest, size))
}

/// Hashes a file: hex SHA-256 and size.
pub fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open {} to hash it", path.display()))?;
    sha256_reader(io::BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("cannot read {} to hash it", path.display()))
}

/// One line of a checksum file: `<hex>  <file name>`.
pub fn line(digest: &str, file_name: &str) -> String {
    format!("{digest}  {file_name}\n")
}

/// Reads the checksum file at `path` (a few KiB at most; anything else is no checksum file):
/// the digest and the file name it names.
pub fn read(path: &Path) -> anyhow::Result<(String, String)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(64 * 1024).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read checksum file {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(text) if text.len() < 64 * 1024 => parse(&text, path),
        _ => bail!(
            "{} is not a checksum file: expected `<64 hex digits>  <file name>`",
            path.display()
        ),
    }
}

/// Parses a one-file checksum file: the digest and the file name it names.
pub fn parse(text: &str, origin: &Path) -> anyhow::Result<(String, String)> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let [line] = lines.as_slice() else {
        bail!(
            "{} should hold exactly one line `<sha256>  <file name>`, it holds {}",
            origin.display(),
            lines.len()
        );
    };
    let parsed = line.split_once(' ').and_then(|(digest, rest)| {
        let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'))?;
        let valid = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && !name.is_empty()).then(|| (digest.to_ascii_lowercase(), name.to_owned()))
    });
    parsed.with_context(|| {
        format!(
            "{} is not a checksum file: expected `<64 hex digits>  <file name>`",
            origin.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_and_binary_mode_is_accepted() {
        let digest = sha256_hex(b"abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let origin = Path::new("x.sha256");
        let text = line(&digest, "x.tar.gz");
        assert_eq!(
            parse(&text, origin).unwrap(),
            (digest.clone(), "x.tar.gz".to_owned())
        );
        assert_eq!(
            parse(&format!("{digest} *x.tar.gz"), origin).unwrap().1,
            "x.tar.gz"
        );
        assert!(parse("nonsense", origin).is_err());
    }
}
