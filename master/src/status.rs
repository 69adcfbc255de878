//! Host liveness from the master's receive time against the agent's declared interval, never
//! from agent clocks.

/// A host's status as the API and the dashboard show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    Stale,
    Down,
    Stopped,
}

/// Below this many intervals since the last sample a host is `up`.
pub const UP_INTERVALS: u64 = 3;
/// Below this many intervals (and at least [`UP_INTERVALS`]) a host is `stale`; beyond, `down`.
pub const STALE_INTERVALS: u64 = 10;

/// When the master last heard from a host, and "now", on one clock: the boot clock
/// (CLOCK_BOOTTIME, which no wall-clock step moves) when the record has a receive time on it
/// from this boot, else the wall clock (a record restored from a snapshot, until its next
/// frame). Every age that decides a host's status or its expiry goes through here.
pub fn seen_and_now(last_seen_ms: u64, last_seen_boot_ms: u64, now_ms: u64) -> (u64, u64) {
    if last_seen_boot_ms != 0 {
        (last_seen_boot_ms, crate::segment::boot_ms())
    } else {
        (last_seen_ms, now_ms)
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Stale => "stale",
            Status::Down => "down",
            Status::Stopped => "stopped",
        }
    }

    /// `stopped` after a goodbye (until a reconnect clears it); else by the age of the last
    /// frame received: `up` < 3 intervals, `stale` < 10 intervals, else `down`.
    pub fn derive(goodbye: bool, last_seen_ms: u64, interval_ms: u32, now_ms: u64) -> Status {
        if goodbye {
            return Status::Stopped;
        }
        let age = now_ms.saturating_sub(last_seen_ms);
        let interval = u64::from(interval_ms.max(1));
        if age < UP_INTERVALS * interval {
            Status::Up
        } else if age < STALE_INTERVALS * interval {
            Status::Stale
        } else {
            Status::Down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_derivation_table() {
        let now = 1_000_000;
        let cases: &[(bool, u64, u32, Status)] = &[
            (false, now, 1000, Status::Up),
            (false, now - 2999, 1000, Status::Up),
            (false, now - 3000, 1000, Status::Stale),
            (false, now - 9999, 1000, Status::Stale),
            (false, now - 10_000, 1000, Status::Down),
            (false, now - 10_000, 5000, Status::Up),
            (false, now + 500, 1000, Status::Up), // receive time in the future: clamp, not panic
            (false, 0, 0, Status::Down),          // a zero interval is treated as 1 ms
            (true, now, 1000, Status::Stopped),
            (true, 0, 1000, Status::Stopped),
        ];
        for &(goodbye, seen, interval, want) in cases {
            assert_eq!(
                Status::derive(goodbye, seen, interval, now),
                want,
                "{goodbye} {seen} {interval}"
            );
        }
    }
}
