//! A /proc file kept open and re-read from the start every sample. procfs regenerates the
//! content on each read from offset 0, so keeping the descriptor saves an open, a close and a
//! path lookup per file per sample, and a positioned read (`pread` at 0 into a buffer that
//! already fits the file) is one syscall where `read_to_string` made five (lseek, fstat,
//! lseek, read, read): on a 1 s cadence those syscalls were much of the agent's CPU time
//! (docs/BENCHMARKS.md, "Agent profile").

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::CollectError;

/// Start size of the buffer: /proc/stat of a 2-core host is ~1.2 KiB, /proc/meminfo ~1.5 KiB.
const START_BYTES: usize = 4096;

/// A read that stops this short of a buffer with room to spare has reached the end: a procfs
/// (seq_file) read fills the caller's buffer up to at least a page unless the file ended, or a
/// single record did not fit the rest of that page (records here are lines of < 256 bytes).
/// Trusting it saves the read that would only return 0: one syscall per file per sample.
const WHOLE_BELOW: usize = 2048;

pub struct ProcFile {
    path: &'static str,
    /// Reopened after any error (e.g. the file vanished with a namespace change).
    file: Option<File>,
    /// Reused between reads; doubled whenever a read fills it, so it settles at a size that
    /// holds the whole file in one read.
    buf: Vec<u8>,
    text: String,
}

impl ProcFile {
    pub fn new(path: &'static str) -> Self {
        ProcFile {
            path,
            file: None,
            buf: vec![0; START_BYTES],
            text: String::new(),
        }
    }

    /// The file's current content.
    pub fn read(&mut self) -> Result<&str, CollectError> {
        match self.read_whole() {
            Ok(n) => {
                self.text.clear();
                self.text.push_str(&String::from_utf8_lossy(&self.buf[..n]));
                Ok(&self.text)
            }
            Err(error) => {
                self.file = None;
                Err(CollectError::Io {
                    what: self.path,
                    error,
                })
            }
        }
    }

    /// Reads the whole file into `buf` from offset 0; returns its length.
    fn read_whole(&mut self) -> std::io::Result<usize> {
        let file = match &self.file {
            Some(f) => f,
            None => self.file.insert(File::open(self.path)?),
        };
        loop {
            let mut n = 0;
            // A seq_file may return less than asked before the end: read on until EOF or full.
            while n < self.buf.len() {
                match file.read_at(&mut self.buf[n..], n as u64)? {
                    0 => return Ok(n),
                    k => n += k,
                }
                if n < WHOLE_BELOW && n < self.buf.len() {
                    return Ok(n);
                }
            }
            // Full: the file may be longer. Grow and read it again from the start, so the
            // content is one consistent generation.
            let len = self.buf.len() * 2;
            self.buf.resize(len, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    fn uptime(f: &mut super::ProcFile) -> f64 {
        let text = f.read().unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn rereads_fresh_content_through_one_descriptor() {
        let mut f = super::ProcFile::new("/proc/uptime");
        let a = uptime(&mut f);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = uptime(&mut f);
        assert!(
            b > a,
            "second read through the same fd sees a later uptime: {a} -> {b}"
        );
    }

    #[test]
    fn a_file_larger_than_the_buffer_is_read_whole() {
        // A 16-byte start buffer must grow until the file fits; compare with a plain read.
        let mut f = super::ProcFile::new("/proc/self/mountinfo");
        f.buf = vec![0; 16];
        let ours = f.read().unwrap().to_owned();
        let theirs = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(ours.lines().count(), theirs.lines().count());
        assert!(ours.ends_with('\n'));
    }
}
