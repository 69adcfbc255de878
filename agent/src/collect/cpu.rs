//! CPU: total and per-core busy share, with the user/system/iowait/steal split, all from one
//! read of /proc/stat per sample (deltas against the previous read). sysinfo reads the same
//! file but does not expose iowait and steal, so reading it once here serves both.

use sentinel_protocol::{limits::MAX_CORES, Sample};

use super::procfile::ProcFile;
use super::CollectError;

/// Jiffies of one `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Times {
    user: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    steal: u64,
    total: u64,
}

/// The previous reading (aggregate first, then each core), so each sample reports the
/// shares since the last one.
pub struct Cpu {
    stat: ProcFile,
    prev: Vec<Times>,
}

/// Parses one `cpu`/`cpuN` line: user nice system idle iowait irq softirq steal (guest time
/// is already counted in user).
fn parse_line(line: &str) -> Option<Times> {
    let mut v = [0u64; 8];
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(line.split_ascii_whitespace().skip(1)) {
        *slot = field.parse().ok()?;
        n += 1;
    }
    if n < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    Some(Times {
        user: user + nice,
        system: system + irq + softirq,
        idle,
        iowait,
        steal,
        total: user + nice + system + idle + iowait + irq + softirq + steal,
    })
}

/// The aggregate line followed by one entry per core, in /proc/stat order.
pub fn parse_stat(text: &str) -> Option<Vec<Times>> {
    let times: Vec<Times> = text
        .lines()
        .take_while(|l| l.starts_with("cpu"))
        .map(parse_line)
        .collect::<Option<_>>()?;
    (!times.is_empty()).then_some(times)
}

/// Shares of `now - prev` in percent: [busy, user, system, iowait, steal], where busy is
/// user + system + steal (iowait is idle time spent waiting, as in top's `wa`).
pub fn split(prev: &Times, now: &Times) -> Option<[f32; 5]> {
    let total = now.total.checked_sub(prev.total).filter(|t| *t > 0)? as f64;
    let pct = |a: u64, b: u64| clamp_percent((a.saturating_sub(b) as f64 * 100.0 / total) as f32);
    let (user, system, steal) = (
        pct(now.user, prev.user),
        pct(now.system, prev.system),
        pct(now.steal, prev.steal),
    );
    Some([
        clamp_percent(user + system + steal),
        user,
        system,
        pct(now.iowait, prev.iowait),
        steal,
    ])
}

/// The protocol wants finite values in 0..=100.
pub fn clamp_percent(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(0.0, 100.0)
    } else {
        0.0
    }
}

impl Cpu {
    /// Takes the first reading; the first sample should come at least
    /// [`super::PRIMING_DELAY`] later for meaningful shares.
    pub fn new() -> Self {
        let mut cpu = Cpu {
            stat: ProcFile::new("/proc/stat"),
            prev: Vec::new(),
        };
        cpu.prev = cpu.read().unwrap_or_default();
        cpu
    }

    fn read(&mut self) -> Result<Vec<Times>, CollectError> {
        parse_stat(self.stat.read()?).ok_or(CollectError::Parse { what: "/proc/stat" })
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        let now = self.read()?;
        if let Some([busy, user, system, iowait, steal]) = self
            .prev
            .first()
            .zip(now.first())
            .and_then(|(p, n)| split(p, n))
        {
            s.cpu_percent = busy;
            s.cpu_user_percent = user;
            s.cpu_system_percent = system;
            s.cpu_iowait_percent = iowait;
            s.cpu_steal_percent = steal;
        }
        // A core that appeared or went offline since the last reading reports 0 once.
        s.cpu_cores_percent = now
            .iter()
            .skip(1)
            .take(MAX_CORES)
            .enumerate()
            .map(|(i, n)| {
                self.prev
                    .get(i + 1)
                    .and_then(|p| split(p, n))
                    .map_or(0.0, |[busy, ..]| busy)
            })
            .collect();
        self.prev = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_computed_from_stat_deltas_for_the_total_and_each_core() {
        let a = parse_stat("cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 50 0 25 400 5 0 0 0\ncpu1 50 0 25 400 5 0 0 0\nintr 1 2\n").unwrap();
        let b = parse_stat("cpu  150 10 70 860 20 5 5 40 0 0\ncpu0 100 0 25 400 5 0 0 0\ncpu1 50 0 25 500 5 0 0 0\n").unwrap();
        assert_eq!(
            a.len(),
            3,
            "aggregate + 2 cores, and the intr line ends the cpu block"
        );
        // deltas: user 50+10, system 20+5+5, idle 60, iowait 10, steal 40; total 200
        assert_eq!(split(&a[0], &b[0]), Some([65.0, 30.0, 15.0, 5.0, 20.0]));
        assert_eq!(
            split(&a[1], &b[1]).map(|s| s[0]),
            Some(100.0),
            "core 0 fully busy"
        );
        assert_eq!(split(&a[2], &b[2]).map(|s| s[0]), Some(0.0), "core 1 idle");
        assert_eq!(split(&b[0], &b[0]), None, "no time passed");
        assert!(parse_stat("intr 1 2 3\n").is_none());
        assert!(parse_stat("cpu  x y z\n").is_none());
    }

    #[test]
    fn percentages_are_clamped_into_protocol_range() {
        assert_eq!(clamp_percent(f32::NAN), 0.0);
        assert_eq!(clamp_percent(100.4), 100.0);
        assert_eq!(clamp_percent(-1.0), 0.0);
    }

    #[test]
    fn a_real_reading_has_one_entry_per_core() {
        let mut cpu = Cpu::new();
        std::thread::sleep(super::super::PRIMING_DELAY);
        let mut s = Sample::default();
        cpu.collect(&mut s).unwrap();
        // One entry per `cpuN` line of /proc/stat (every online core), which is not
        // available_parallelism(): that one follows this process's affinity and cgroup quota.
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        assert_eq!(s.cpu_cores_percent.len(), cores);
        assert!((0.0..=100.0).contains(&s.cpu_percent));
    }
}
