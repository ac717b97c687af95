//! Keeping a job's output on the worker's disk until the server has it.
//!
//! Output goes to the slot's spool file, which the log sender uploads
//! from. Two things can keep it from there:
//! - The server keeps at most its log cap of an attempt (the first half
//!   and the newest output). Past the first half, output goes to a ring
//!   file that keeps only the newest bytes; when the output ends, a note
//!   saying how much was cut and the ring's contents are put at the end of
//!   the spool. So a runaway job neither fills the worker's disk nor pushes
//!   gigabytes at the server.
//! - The disk is full. Then what could not be kept is counted (the job ends
//!   as the worker's failure), and the spool's length is read from the file,
//!   never from a count of what was given, so a partial write cannot shift
//!   later offsets.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// What the spool holds after a write.
pub struct Kept {
    /// The spool's length: what the sender may upload.
    pub len: u64,
    /// Bytes that could not be kept, and why.
    pub lost: u64,
    pub why: Option<String>,
}

pub struct Keeper {
    spool: PathBuf,
    file: Option<File>,
    len: u64,
    /// Output bytes seen so far.
    seen: u64,
    /// Output before this offset goes to the spool; after it, to the ring.
    head: u64,
    ring_path: PathBuf,
    ring: Option<File>,
    ring_size: u64,
}

/// Room left for the note between the head and the tail.
const NOTE_ROOM: u64 = 256;

impl Keeper {
    /// `cap` is the most bytes to keep of the output (0: everything).
    pub fn new(spool: PathBuf, cap: u64) -> Keeper {
        let (head, ring_size) = if cap == 0 {
            (u64::MAX, 0)
        } else {
            let head = cap / 2;
            (
                head,
                cap.saturating_sub(head).saturating_sub(NOTE_ROOM).max(1),
            )
        };
        Keeper {
            ring_path: spool.with_extension("tail"),
            spool,
            file: None,
            len: 0,
            seen: 0,
            head,
            ring: None,
            ring_size,
        }
    }

    /// Keeps a piece of output.
    pub fn keep(&mut self, data: &[u8]) -> Kept {
        let to_head = (self.head.saturating_sub(self.seen)).min(data.len() as u64) as usize;
        let mut kept = self.append(&data[..to_head]);
        if to_head < data.len() {
            let rest = &data[to_head..];
            if let Err(e) = self.ring_write(self.seen + to_head as u64 - self.head, rest) {
                kept.lost += rest.len() as u64;
                kept.why.get_or_insert_with(|| e.to_string());
            }
        }
        self.seen += data.len() as u64;
        kept
    }

    /// The output ended: the newest bytes the ring kept go at the end of
    /// the spool, after a note saying how many were cut.
    pub fn finish(&mut self) -> Kept {
        let tail = self.seen.saturating_sub(self.head);
        if tail == 0 || self.head == u64::MAX {
            return self.append(&[]);
        }
        let kept_tail = tail.min(self.ring_size);
        let cut = tail - kept_tail;
        let mut out = Vec::with_capacity(kept_tail as usize + NOTE_ROOM as usize);
        if cut > 0 {
            out.extend_from_slice(
                format!(
                    "\n[testbot: {cut} bytes of this log were cut to keep it under the server's cap]\n"
                )
                .as_bytes(),
            );
        }
        let read = self.ring_read(tail, kept_tail, &mut out);
        let mut kept = self.append(&out);
        if let Err(e) = read {
            kept.lost += kept_tail;
            kept.why.get_or_insert_with(|| e.to_string());
        }
        if let Some(ring) = self.ring.take() {
            drop(ring);
            let _ = super::files::empty(&self.ring_path);
        }
        kept
    }

    fn append(&mut self, data: &[u8]) -> Kept {
        let mut kept = Kept {
            len: self.len,
            lost: 0,
            why: None,
        };
        if data.is_empty() {
            return kept;
        }
        if self.file.is_none() {
            match OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.spool)
            {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    kept.lost = data.len() as u64;
                    kept.why = Some(e.to_string());
                    return kept;
                }
            }
        }
        let f = self.file.as_mut().expect("opened above");
        if let Err(e) = f.write_all(data) {
            // Part of it may be there: the file says how much.
            let len = f.metadata().map_or(self.len, |m| m.len()).max(self.len);
            let written = (len - self.len).min(data.len() as u64);
            self.len = len;
            kept.len = len;
            kept.lost = data.len() as u64 - written;
            kept.why = Some(e.to_string());
            return kept;
        }
        self.len += data.len() as u64;
        kept.len = self.len;
        kept
    }

    /// Writes `data`, the tail's bytes from offset `at`, into the ring.
    fn ring_write(&mut self, at: u64, data: &[u8]) -> std::io::Result<()> {
        if self.ring.is_none() {
            self.ring = Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&self.ring_path)?,
            );
        }
        let ring = self.ring.as_ref().expect("opened above");
        // Only the last ring_size bytes of `data` can survive.
        let skip = (data.len() as u64).saturating_sub(self.ring_size) as usize;
        let (mut at, mut data) = (at + skip as u64, &data[skip..]);
        while !data.is_empty() {
            let pos = at % self.ring_size;
            let n = ((self.ring_size - pos) as usize).min(data.len());
            ring.write_all_at(&data[..n], pos)?;
            at += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Appends to `out` the last `n` of the `tail` bytes the ring saw, in
    /// order.
    fn ring_read(&self, tail: u64, n: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
        let Some(ring) = self.ring.as_ref() else {
            return Ok(());
        };
        let mut at = tail - n;
        let end = tail;
        while at < end {
            let pos = at % self.ring_size;
            let len = (self.ring_size - pos).min(end - at) as usize;
            let start = out.len();
            out.resize(start + len, 0);
            ring.read_exact_at(&mut out[start..], pos)?;
            at += len as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cap: u64, pieces: &[&[u8]]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("slot-0.log");
        let mut k = Keeper::new(spool.clone(), cap);
        for p in pieces {
            let kept = k.keep(p);
            assert_eq!(kept.lost, 0);
        }
        let kept = k.finish();
        assert_eq!(kept.len, std::fs::metadata(&spool).map_or(0, |m| m.len()));
        std::fs::read(&spool).unwrap_or_default()
    }

    #[test]
    fn without_a_cap_everything_is_kept() {
        assert_eq!(run(0, &[b"abc", b"def"]), b"abcdef");
    }

    #[test]
    fn under_the_cap_everything_is_kept_in_order() {
        assert_eq!(run(1024, &[b"head ", b"and ", b"tail"]), b"head and tail");
    }

    #[test]
    fn over_the_cap_the_head_a_note_and_the_newest_bytes_are_kept() {
        let cap = 1024;
        let out: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let pieces: Vec<&[u8]> = out.chunks(777).collect();
        let kept = run(cap, &pieces);
        let head = (cap / 2) as usize;
        let tail = (cap - cap / 2 - NOTE_ROOM) as usize;
        assert_eq!(&kept[..head], &out[..head]);
        assert!(kept.ends_with(&out[out.len() - tail..]));
        let note = String::from_utf8_lossy(&kept[head..kept.len() - tail]).into_owned();
        let cut = out.len() - head - tail;
        assert!(note.contains(&format!("{cut} bytes")), "{note}");
        assert!(kept.len() as u64 <= cap);
    }

    #[test]
    fn one_piece_larger_than_the_ring_keeps_its_end() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let kept = run(1024, &[&data]);
        let tail = (1024 - 512 - NOTE_ROOM) as usize;
        assert_eq!(&kept[..512], &data[..512]);
        assert!(kept.ends_with(&data[data.len() - tail..]));
    }
}
