//! Network interfaces: cumulative rx/tx bytes since boot (the master derives rates), from one
//! read of /proc/net/dev. sysinfo has the same counters but opens nine sysfs files per
//! interface plus a netlink socket on every refresh; on a host with four interfaces that was
//! more than half of the agent's CPU time. Loopback is skipped: it is the host talking to
//! itself.
//!
//! Each interface is classified physical or virtual once, when its name first appears: the
//! kernel gives a physical device a `device` link in /sys/class/net/<name>/ (veth, bridges,
//! bonds, tun/tap, ifb, dummy and VLANs have none). The master's host totals count physical
//! interfaces only, so traffic that crosses a bridge or a veth pair on its way out of the host
//! is counted once (docs/CONTRACT.md).

use sentinel_protocol::{
    limits::{MAX_INTERFACES, MAX_TEXT_BYTES},
    Interface, Sample,
};

use std::path::Path;

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
            is_virtual: None,
        });
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list.truncate(MAX_INTERFACES);
    Some(list)
}

/// True when sysfs shows no `device` behind the interface (see the module comment).
fn is_virtual_in(sys_class_net: &Path, name: &str) -> bool {
    !sys_class_net.join(name).join("device").exists()
}

pub struct Network {
    dev: ProcFile,
    /// Classification of the names seen in the previous sample (sorted by name, like the
    /// list): a name keeps its class while it exists, so sysfs is read only when an interface
    /// appears.
    known: Vec<(String, bool)>,
}

impl Network {
    pub fn new() -> Self {
        Network {
            dev: ProcFile::new("/proc/net/dev"),
            known: Vec::new(),
        }
    }

    pub fn collect(&mut self, s: &mut Sample) -> Result<(), CollectError> {
        s.interfaces = parse(self.dev.read()?).ok_or(CollectError::Parse {
            what: "/proc/net/dev",
        })?;
        self.classify(Path::new("/sys/class/net"), &mut s.interfaces);
        Ok(())
    }

    fn classify(&mut self, sys_class_net: &Path, list: &mut [Interface]) {
        let same = list.len() == self.known.len()
            && list.iter().zip(&self.known).all(|(i, k)| i.name == k.0);
        if !same {
            let old = std::mem::take(&mut self.known);
            self.known = list
                .iter()
                .map(|i| {
                    let class = match old.binary_search_by(|k| k.0.as_str().cmp(&i.name)) {
                        Ok(at) => old[at].1,
                        Err(_) => is_virtual_in(sys_class_net, &i.name),
                    };
                    (i.name.clone(), class)
                })
                .collect();
        }
        for (i, k) in list.iter_mut().zip(&self.known) {
            i.is_virtual = Some(k.1);
        }
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
    fn interfaces_without_a_sysfs_device_are_virtual_and_classified_once() {
        let sys = std::env::temp_dir().join(format!("sentinel-sysnet-{}", std::process::id()));
        std::fs::create_dir_all(sys.join("eth0/device")).unwrap();
        std::fs::create_dir_all(sys.join("veth1")).unwrap();
        let iface = |name: &str| sentinel_protocol::Interface {
            name: name.into(),
            ..Default::default()
        };
        let mut net = super::Network::new();
        let mut list = vec![iface("eth0"), iface("veth1"), iface("zz-gone")];
        net.classify(&sys, &mut list);
        let classes: Vec<_> = list.iter().map(|i| i.is_virtual).collect();
        assert_eq!(classes, [Some(false), Some(true), Some(true)]);
        // A known name keeps its class without reading sysfs again.
        std::fs::remove_dir_all(sys.join("eth0")).unwrap();
        let mut list = vec![iface("eth0"), iface("veth1")];
        net.classify(&sys, &mut list);
        assert_eq!(list[0].is_virtual, Some(false));
        std::fs::remove_dir_all(&sys).unwrap();
    }

    #[test]
    fn this_hosts_interfaces_are_read() {
        let mut s = sentinel_protocol::Sample::default();
        super::Network::new().collect(&mut s).unwrap();
        assert!(s.interfaces.iter().all(|i| i.name != "lo"));
    }
}
