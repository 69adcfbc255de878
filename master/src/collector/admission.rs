//! The bound on new host identities per peer address (`new_hosts_per_minute`): an agent id
//! the table does not know takes a slot, so one token holder creating identities in a loop
//! would otherwise fill the table in about a second and lock every real new host out. Known
//! hosts never pass through here. Pure (the clock is a parameter), unit-tested.

use std::collections::HashMap;
use std::net::IpAddr;

/// Length of the counting window.
pub const WINDOW_MS: u64 = 60_000;
/// Peer addresses remembered at once. At 56 bytes an entry this is ~4 MB at most; a flood
/// from more distinct addresses than this within one window is refused until old windows
/// end (failing closed keeps the table for the hosts that are already in it).
pub const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// IPv4 addresses count one by one; IPv6 addresses by their /64, since one host usually
/// holds a whole /64 and could otherwise change address for every hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(u128);

impl AddrKey {
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey(u128::from(u32::from(v4))),
                None => AddrKey((u128::from(v6) >> 64 << 64) | 1),
            },
        }
    }
}

/// Counts new identities per [`AddrKey`] in fixed one-minute windows.
pub struct NewHostRate {
    /// Allowed per address per window; 0 = no bound.
    per_minute: u32,
    /// key -> (window start, new identities in it).
    seen: HashMap<AddrKey, (u64, u32)>,
}

impl NewHostRate {
    pub fn new(per_minute: u32) -> NewHostRate {
        NewHostRate {
            per_minute,
            seen: HashMap::new(),
        }
    }

    /// Counts one new identity from `ip` at `now_ms`; false if it is over the bound.
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let key = AddrKey::of(ip);
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_TRACKED_ADDRESSES {
            self.seen
                .retain(|_, (start, _)| now_ms.saturating_sub(*start) < WINDOW_MS);
            if self.seen.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        let entry = self.seen.entry(key).or_insert((now_ms, 0));
        if now_ms.saturating_sub(entry.0) >= WINDOW_MS {
            *entry = (now_ms, 0);
        }
        if entry.1 >= self.per_minute {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_gets_its_bound_per_window() {
        let mut r = NewHostRate::new(3);
        let t = 1_000_000;
        for _ in 0..3 {
            assert!(r.allow(ip("127.0.0.1"), t));
        }
        assert!(!r.allow(ip("127.0.0.1"), t + 10));
        assert!(
            r.allow(ip("127.0.0.2"), t + 10),
            "another address is not affected"
        );
        assert!(
            !r.allow(ip("::ffff:127.0.0.1"), t + 20),
            "mapped v4 is the same address"
        );
        assert!(r.allow(ip("127.0.0.1"), t + WINDOW_MS), "a new window");
    }

    #[test]
    fn ipv6_counts_by_its_64_and_zero_means_no_bound() {
        let mut r = NewHostRate::new(1);
        assert!(r.allow(ip("2001:db8::1"), 0));
        assert!(!r.allow(ip("2001:db8::2"), 0));
        assert!(r.allow(ip("2001:db8:0:1::1"), 0));
        let mut open = NewHostRate::new(0);
        assert!((0..10_000).all(|_| open.allow(ip("10.0.0.1"), 0)));
    }

    #[test]
    fn the_address_map_is_bounded() {
        let mut r = NewHostRate::new(1);
        for n in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(r.allow(IpAddr::V4(n.into()), 0));
        }
        assert!(!r.allow(ip("255.255.255.255"), 1), "full within the window");
        assert!(
            r.allow(ip("255.255.255.255"), WINDOW_MS),
            "old windows are dropped"
        );
        assert!(r.seen.len() <= MAX_TRACKED_ADDRESSES);
    }
}
