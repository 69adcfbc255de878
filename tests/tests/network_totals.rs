//! Network counters in /metrics (docs/CONTRACT.md "Network totals"): they never go backwards
//! when an interface disappears or the host reboots (Prometheus would read a decrease as a
//! counter reset), and traffic that crosses a bridge or veth on its way out is counted once,
//! on the physical interface. A raw peer speaks for a host whose interfaces it controls.

use std::time::Duration;

use sentinel_protocol::{AgentMessage, Interface, MasterMessage};
use sentinel_tests::*;

const ID: &str = "0123456789abcdef0123456789abcdef";

fn iface(name: &str, rx: u64, tx: u64, is_virtual: Option<bool>) -> Interface {
    Interface {
        name: name.into(),
        rx_bytes: rx,
        tx_bytes: tx,
        is_virtual,
    }
}

/// `sentinel_host_network_{receive,transmit}_bytes_total` of the one host, from /metrics.
fn totals(master: &Master) -> (f64, f64) {
    let (status, text) = master.get("/metrics", Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200);
    let value = |family: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(family) && l.contains(ID))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("/metrics has no {family} for the host:\n{text}"))
            .parse()
            .unwrap()
    };
    (
        value("sentinel_host_network_receive_bytes_total{"),
        value("sentinel_host_network_transmit_bytes_total{"),
    )
}

#[test]
fn network_totals_never_go_backwards_and_count_physical_interfaces_once() {
    let master = Master::start();
    let mut peer = Peer::connect(master.listen);
    let answer = peer.handshake(&test_hello(ID, "router-1", 1), TOKEN);
    assert!(
        matches!(answer, Some(MasterMessage::Welcome(_))),
        "{answer:?}"
    );
    // (interfaces of each sample, the totals /metrics must show after it)
    let steps: Vec<(Vec<Interface>, (f64, f64))> = vec![
        // A host with two NICs, a bridge and a container's veth: the bridge and veth carry
        // the same bytes again, so only eth0 + eth1 count.
        (
            vec![
                iface("br0", 5_000, 5_000, Some(true)),
                iface("eth0", 1_000, 100, Some(false)),
                iface("eth1", 2_000, 200, Some(false)),
                iface("veth1", 4_000, 4_000, Some(true)),
            ],
            (3_000.0, 300.0),
        ),
        (
            vec![
                iface("br0", 5_500, 5_500, Some(true)),
                iface("eth0", 1_500, 150, Some(false)),
                iface("eth1", 2_100, 210, Some(false)),
                iface("veth1", 4_500, 4_500, Some(true)),
            ],
            (3_600.0, 360.0),
        ),
        // eth1 disappears (unplugged): the sum drops by 2,100, the counter must not.
        (
            vec![
                iface("br0", 5_600, 5_600, Some(true)),
                iface("eth0", 1_600, 160, Some(false)),
            ],
            (3_600.0, 360.0),
        ),
        (
            vec![
                iface("br0", 5_700, 5_700, Some(true)),
                iface("eth0", 1_700, 170, Some(false)),
            ],
            (3_700.0, 370.0),
        ),
        // A reboot: the kernel's counters start again from zero.
        (vec![iface("eth0", 10, 1, Some(false))], (3_700.0, 370.0)),
        (vec![iface("eth0", 60, 6, Some(false))], (3_750.0, 375.0)),
    ];
    let mut last = (0.0, 0.0);
    for (n, (interfaces, want)) in steps.into_iter().enumerate() {
        let seq = n as u64 + 1;
        let mut sample = test_sample(seq);
        sample.interfaces = interfaces;
        assert!(peer.send(&AgentMessage::Sample(sample)));
        match peer.read() {
            Some(MasterMessage::Ack(a)) => assert_eq!(a.seq, seq),
            other => panic!("sample {seq} not acked: {other:?}"),
        }
        let got = totals(&master);
        assert_eq!(got, want, "totals after sample {seq}");
        assert!(
            got.0 >= last.0 && got.1 >= last.1,
            "went backwards: {last:?} -> {got:?}"
        );
        last = got;
    }
    let host = master.host("router-1").unwrap();
    assert_accounted(&host);
}

#[test]
fn a_host_with_only_virtual_or_unclassified_interfaces_counts_them_all() {
    let master = Master::start();
    for (n, (id, list)) in [
        // A container: its veth is its only way out.
        (
            "1123456789abcdef0123456789abcdef",
            vec![iface("eth0", 700, 70, Some(true))],
        ),
        // A 0.1.0 agent does not classify: every interface counts, as before.
        (
            "2123456789abcdef0123456789abcdef",
            vec![
                iface("docker0", 300, 30, None),
                iface("eth0", 700, 70, None),
            ],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut peer = Peer::connect(master.listen);
        let hostname = format!("h{n}");
        let answer = peer.handshake(&test_hello(id, &hostname, 1), TOKEN);
        assert!(matches!(answer, Some(MasterMessage::Welcome(_))));
        let want: u64 = list.iter().map(|i| i.rx_bytes).sum();
        let mut sample = test_sample(1);
        sample.interfaces = list;
        assert!(peer.send(&AgentMessage::Sample(sample)));
        assert!(matches!(peer.read(), Some(MasterMessage::Ack(_))));
        let (_, text) = master.get("/metrics", Duration::from_secs(5)).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("sentinel_host_network_receive_bytes_total{") && l.contains(id))
            .unwrap_or_else(|| panic!("no receive total for {id}:\n{text}"));
        assert!(line.ends_with(&format!(" {want}")), "{line}");
    }
}
