//! CPU: total and per-core usage from sysinfo; the user/system/iowait/steal split from
//! /proc/stat deltas, which sysinfo does not expose.

use sentinel_protocol::{limits::MAX_CORES, Sample};
use sysinfo::{CpuRefreshKind, System};

use super::{read_proc, CollectError};

/// Jiffies of the aggregate `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Times {
    user: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    steal: u64,
    total: u64,
}

/// The previous reading, so each sample reports the split since the last one.
#[derive(Debug, Default)]
pub struct Split {
    prev: Option<Times>,
}

/// Parses the `cpu ` line: user nice system idle iowait irq softirq steal (guest is already
/// counted in user).
pub fn parse_stat(text: &str) -> Option<Times> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 4 {
        return None;
    }
    let (user, nice, system, idle, iowait, irq, softirq, steal) =
        (at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
    Some(Times {
        user: user + nice,
        system: system + irq + softirq,
        idle,
        iowait,
        steal,
        total: user + nice + system + idle + iowait + irq + softirq + steal,
    })
}

fn read_times() -> Result<Times, CollectError> {
    parse_stat(&read_proc("/proc/stat", "/proc/stat")?)
        .ok_or(CollectError::Parse { what: "/proc/stat" })
}

/// Percentages of `now - prev`; None when no time passed.
pub fn split(prev: &Times, now: &Times) -> Option<[f32; 4]> {
    let total = now.total.checked_sub(prev.total).filter(|t| *t > 0)? as f64;
    let pct = |a: u64, b: u64| clamp_percent((a.saturating_sub(b) as f64 * 100.0 / total) as f32);
    Some([
        pct(now.user, prev.user),
        pct(now.system, prev.system),
        pct(now.iowait, prev.iowait),
        pct(now.steal, prev.steal),
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

fn usage_kind() -> CpuRefreshKind {
    CpuRefreshKind::nothing().with_usage()
}

/// First readings of both sources; usage needs a second one at least
/// [`super::PRIMING_DELAY`] later.
pub fn prime(sys: &mut System, split: &mut Split) {
    sys.refresh_cpu_specifics(usage_kind());
    split.prev = read_times().ok();
}

pub fn collect(sys: &mut System, state: &mut Split, s: &mut Sample) -> Result<(), CollectError> {
    sys.refresh_cpu_specifics(usage_kind());
    s.cpu_percent = clamp_percent(sys.global_cpu_usage());
    s.cpu_cores_percent = sys
        .cpus()
        .iter()
        .take(MAX_CORES)
        .map(|c| clamp_percent(c.usage()))
        .collect();
    let now = read_times()?;
    if let Some([user, system, iowait, steal]) = state.prev.as_ref().and_then(|p| split(p, &now)) {
        s.cpu_user_percent = user;
        s.cpu_system_percent = system;
        s.cpu_iowait_percent = iowait;
        s.cpu_steal_percent = steal;
    }
    state.prev = Some(now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_computed_from_stat_deltas() {
        let a = parse_stat("cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_stat("cpu  150 10 70 860 20 5 5 40 0 0\n").unwrap();
        // deltas: user 50+10, system 20+5+5, idle 60, iowait 10, steal 40; total 200
        assert_eq!(split(&a, &b), Some([30.0, 15.0, 5.0, 20.0]));
        assert_eq!(split(&b, &b), None, "no time passed");
        assert!(parse_stat("intr 1 2 3\n").is_none());
    }

    #[test]
    fn percentages_are_clamped_into_protocol_range() {
        assert_eq!(clamp_percent(f32::NAN), 0.0);
        assert_eq!(clamp_percent(100.4), 100.0);
        assert_eq!(clamp_percent(-1.0), 0.0);
    }
}
