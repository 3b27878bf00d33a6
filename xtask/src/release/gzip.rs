//! Parallel gzip, as pigz does it: the input is cut into fixed blocks, each compressed on a
//! thread of its own with the 32 KiB before it as its dictionary, and the pieces are joined into
//! one ordinary gzip member. The output depends on the input and the level only, never on how
//! many threads ran, so archives stay reproducible; any gzip reader reads it.

use std::io::{self, Write};
use std::thread;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Input per block: large enough that the per-block cost is noise, small enough to spread.
const BLOCK: usize = 512 * 1024;
/// deflate's window: what a block may refer back to in the one before.
const WINDOW: usize = 32 * 1024;

/// Writes `input` gzip-compressed at `level` to `out`, with a header that holds no time and no
/// file name.
pub fn compress(input: &[u8], level: u32, mut out: impl Write) -> io::Result<()> {
    let extra_flags = match level {
        9 => 2,
        0 | 1 => 4,
        _ => 0,
    };
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL OS=unknown
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255])?;
    let blocks: Vec<&[u8]> = if input.is_empty() {
        vec![input]
    } else {
        input.chunks(BLOCK).collect()
    };
    let threads = thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1)
        .min(blocks.len());
    let mut pieces: Vec<Vec<u8>> = vec![Vec::new(); blocks.len()];
    thread::scope(|scope| -> io::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let blocks = &blocks;
                scope.spawn(move || -> io::Result<Vec<(usize, Vec<u8>)>> {
                    (worker..blocks.len())
                        .step_by(threads)
                        .map(|index| {
                            let before = index.checked_sub(1).map(|previous| blocks[previous]);
                            let last = index + 1 == blocks.len();
                            deflate_block(blocks[index], before, level, last)
                                .map(|piece| (index, piece))
                        })
                        .collect()
                })
            })
            .collect();
        for worker in workers {
            for (index, piece) in worker.join().expect("a compression thread panicked")? {
                pieces[index] = piece;
            }
        }
        Ok(())
    })?;
    for piece in &pieces {
        out.write_all(piece)?;
    }
    let mut crc = Crc::new();
    crc.update(input);
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&(input.len() as u32).to_le_bytes())?;
    out.flush()
}

/// Raw deflate of one block, primed with the end of the block before; ends on a byte boundary
/// (sync flush) unless it is the last, which finishes the stream.
fn deflate_block(
    block: &[u8],
    before: Option<&[u8]>,
    level: u32,
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    if let Some(before) = before {
        compress
            .set_dictionary(&before[before.len().saturating_sub(WINDOW)..])
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&block[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = compress.total_in() as usize == block.len();
        let room_left = out.len() < out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            _ if !last && all_in && room_left => return Ok(out),
            _ => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|index| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // Half text-like repetition, half noise: both compress paths are exercised.
                if index % 4096 < 2048 {
                    b"saulpos "[index % 8]
                } else {
                    state as u8
                }
            })
            .collect()
    }

    #[test]
    fn any_gzip_reader_gets_the_input_back_and_the_bytes_are_stable() {
        for len in [0, 1, BLOCK - 1, BLOCK, 3 * BLOCK + 17] {
            let input = sample(len);
            let mut packed = Vec::new();
            compress(&input, 6, &mut packed).unwrap();
            let mut unpacked = Vec::new();
            flate2::read::GzDecoder::new(packed.as_slice())
                .read_to_end(&mut unpacked)
                .unwrap();
            assert_eq!(unpacked, input, "length {len}");
            let mut again = Vec::new();
            compress(&input, 6, &mut again).unwrap();
            assert_eq!(packed, again);
        }
    }

    #[test]
    fn the_dictionary_keeps_blocks_as_small_as_one_stream() {
        let input: Vec<u8> = sample(4 * BLOCK);
        let mut parallel = Vec::new();
        compress(&input, 6, &mut parallel).unwrap();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&input).unwrap();
        let single = single.finish().unwrap();
        assert!(
            parallel.len() as f64 <= single.len() as f64 * 1.002,
            "{} vs {}",
            parallel.len(),
            single.len()
        );
    }
}
