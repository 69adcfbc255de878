//! Network interfaces: cumulative rx/tx bytes since boot (the master derives rates).
//! Loopback is skipped: it is traffic of the host with itself.

use sentinel_protocol::{
    limits::{MAX_INTERFACES, MAX_TEXT_BYTES},
    Interface, Sample,
};
use sysinfo::Networks;

use super::{truncate_text, CollectError};

pub fn collect(networks: &mut Networks, s: &mut Sample) -> Result<(), CollectError> {
    // `true`: forget interfaces that disappeared (containers, VPNs come and go).
    networks.refresh(true);
    let mut list: Vec<Interface> = networks
        .iter()
        .filter(|(name, _)| *name != "lo")
        .map(|(name, data)| Interface {
            name: truncate_text(name.to_string_lossy().into_owned(), MAX_TEXT_BYTES),
            rx_bytes: data.total_received(),
            tx_bytes: data.total_transmitted(),
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list.truncate(MAX_INTERFACES);
    s.interfaces = list;
    Ok(())
}
