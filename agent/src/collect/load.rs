//! Load averages (1, 5, 15 minutes) from /proc/loadavg, through a kept-open descriptor (see
//! memory.rs for why not sysinfo's per-read buffer).

use sentinel_protocol::Sample;

use super::procfile::ProcFile;
use super::CollectError;

pub fn parse(text: &str) -> Option<[f32; 3]> {
    let mut f = text
        .split_ascii_whitespace()
        .map(|v| v.parse::<f32>().ok().filter(|x| x.is_finite() && *x >= 0.0));
    Some([f.next()??, f.next()??, f.next()??])
}

pub struct Load {
    loadavg: ProcFile,
}

impl Load {
    pub fn new() -> Self {
        Load {
            loadavg: ProcFile::new("/proc/loadavg"),
        }
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        [s.load1, s.load5, s.load15] = parse(self.loadavg.read()?).ok_or(CollectError::Parse {
            what: "/proc/loadavg",
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loadavg_gives_three_averages() {
        assert_eq!(
            super::parse("0.25 1.50 2.00 3/191 10061\n"),
            Some([0.25, 1.5, 2.0])
        );
        assert_eq!(super::parse("0.25 nan 2.00 3/191 1\n"), None);
        assert_eq!(super::parse("0.25\n"), None);
    }
}
