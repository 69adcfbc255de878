//! Network interfaces: cumulative rx/tx bytes since boot (the master derives rates), from one
//! read of /proc/net/dev. sysinfo has the same counters but opens nine sysfs files per
//! interface plus a netlink socket on every refresh; on a host with four interfaces that was
//! more than half of the agent's CPU time. Loopback is skipped: it is the host talking to
//! itself.

use sentinel_protocol::{
    limits::{MAX_INTERFACES, MAX_TEXT_BYTES},
    Interface, Sample,
};

use super::procfile::ProcFile;
use super::{truncate_text, CollectError};

/// Parses /proc/net/dev: two header lines, then `name: rx_bytes rx_packets ... (8 receive
/// fields) tx_bytes ...`.
pub fn parse(text: &str) -> Option<Vec<Interface>> {
    let mut list = Vec::new();
    for line in text.lines().skip(2) {
        let (name, fields) = line.split_once(':')?;
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let mut f = fields.split_ascii_whitespace();
        let rx_bytes = f.next()?.parse().ok()?;
        let tx_bytes = f.nth(7)?.parse().ok()?;
        list.push(Interface {
            name: truncate_text(name.to_owned(), MAX_TEXT_BYTES),
            rx_bytes,
            tx_bytes,
        });
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list.truncate(MAX_INTERFACES);
    Some(list)
}

pub struct Network {
    dev: ProcFile,
}

impl Network {
    pub fn new() -> Self {
        Network {
            dev: ProcFile::new("/proc/net/dev"),
        }
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        s.interfaces = parse(self.dev.read()?).ok_or(CollectError::Parse {
            what: "/proc/net/dev",
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_net_dev_gives_rx_and_tx_bytes_without_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0: 939820337  700000    0    0    0     0          0         0  2538275   20000    0    0    0     0       0          0
br-lan:       5       1    0    0    0     0          0         0        7       1    0    0    0     0       0          0
";
        let list = super::parse(text).unwrap();
        let got: Vec<(&str, u64, u64)> = list
            .iter()
            .map(|i| (i.name.as_str(), i.rx_bytes, i.tx_bytes))
            .collect();
        assert_eq!(got, [("br-lan", 5, 7), ("eth0", 939_820_337, 2_538_275)]);
        assert!(
            super::parse("h1\nh2\neth0: 1 2\n").is_none(),
            "short line is a parse error"
        );
    }

    #[test]
    fn this_hosts_interfaces_are_read() {
        let mut s = sentinel_protocol::Sample::default();
        super::Network::new().collect(&mut s).unwrap();
        assert!(s.interfaces.iter().all(|i| i.name != "lo"));
    }
}
