//! A /proc file kept open and re-read from the start every sample. procfs regenerates the
//! content on each read from offset 0, so keeping the descriptor saves an open, a close and a
//! path lookup per file per sample: on a 1 s cadence those syscalls were most of the agent's
//! CPU time (docs/BENCHMARKS.md, "Agent profile").

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::CollectError;

pub struct ProcFile {
    path: &'static str,
    /// Reopened after any error (e.g. the file vanished with a namespace change).
    file: Option<File>,
    /// Reused between reads: these files are a few KiB and are read every sample.
    buf: String,
}

impl ProcFile {
    pub fn new(path: &'static str) -> Self {
        ProcFile {
            path,
            file: None,
            buf: String::new(),
        }
    }

    /// The file's current content.
    pub fn read(&mut self) -> Result<&str, CollectError> {
        self.buf.clear();
        if let Err(error) = self.read_into_buf() {
            self.file = None;
            return Err(CollectError::Io {
                what: self.path,
                error,
            });
        }
        Ok(&self.buf)
    }

    fn read_into_buf(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => {
                f.seek(SeekFrom::Start(0))?;
                f
            }
            None => self.file.insert(File::open(self.path)?),
        };
        file.read_to_string(&mut self.buf)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rereads_fresh_content_through_one_descriptor() {
        let mut f = super::ProcFile::new("/proc/uptime");
        let a: f64 = f
            .read()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b: f64 = f
            .read()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            b > a,
            "second read through the same fd sees a later uptime: {a} -> {b}"
        );
    }
}
