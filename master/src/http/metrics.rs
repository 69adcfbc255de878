//! /metrics in the Prometheus text format (0.0.4): `sentinel_` names with unit suffixes, HELP
//! and TYPE for every family, per-host series labelled `host` and `id` and then the host's own
//! labels (PROTOCOL.md 1.2; bounded by the table's capacity times `MAX_LABELS`), and the
//! master's own health.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::api::{records, status_of};
use crate::collector::handshake::RefusalCode;
use crate::segment::boot_ms;
use crate::status::Status;
use crate::table::layout::{CollectorCounters, NetTotals};
use crate::table::{Record, Table};

/// Appends `s` to `out` escaped as the text format wants a label value: `\\`, `\"` and `\n`
/// (the only three escapes it has; every other character, non-ASCII included, is itself).
fn escape_into(out: &mut String, s: &str) {
    let mut rest = s;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

/// Whether a host label may go on a series beside Sentinel's `host` and `id`: label-name
/// syntax, not `__*`, not `host` or `id`. The hello already refuses anything else
/// (`sentinel_protocol::labels::validate`, and `Record::labels_iter` skips a malformed entry);
/// this keeps even a damaged table image from producing a duplicate or unparsable label, which
/// would fail the whole scrape (or, in remote_write, the whole request).
pub(crate) fn usable_host_label(name: &str) -> bool {
    sentinel_protocol::labels::is_label_name(name)
        && !name.starts_with("__")
        && name != "host"
        && name != "id"
}

/// The label set of one host's series, without the braces: `host` and `id` first, then the
/// host's labels in name order, values escaped. Rendered once per host per scrape and reused
/// by all its series. A label out of name order (so possibly a repeat) is left out.
pub(crate) fn host_label_set<'a>(
    hostname: &str,
    id: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut out = String::with_capacity(hostname.len() + id.len() + 64);
    out.push_str("host=\"");
    escape_into(&mut out, hostname);
    out.push_str("\",id=\"");
    escape_into(&mut out, id);
    out.push('"');
    let mut previous: Option<&str> = None;
    for (name, value) in labels {
        if !usable_host_label(name) || previous.is_some_and(|p| p >= name) {
            continue;
        }
        previous = Some(name);
        out.push(',');
        out.push_str(name);
        out.push_str("=\"");
        escape_into(&mut out, value);
        out.push('"');
    }
    out
}

/// A sample value as /metrics prints it: an f32 the agent sent in its own shortest form
/// (`2.39`, not the `2.390000104904175` of its f64 widening), anything else as f64.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    F32(f32),
    F64(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Rust's float Display is the shortest text that parses back to the same value.
        match self {
            Num::F32(v) => write!(f, "{v}"),
            Num::F64(v) => write!(f, "{v}"),
        }
    }
}

type Getter = fn(&Record, u64) -> Option<Num>;

/// Per-host families: (name, type, help, value; `None` = no series for that host).
const HOST_FAMILIES: &[(&str, &str, &str, Getter)] = &[
    (
        "sentinel_host_up",
        "gauge",
        "1 if the host's status is up (a sample within 3 intervals), else 0.",
        |r, now| {
            Some(Num::F64(f64::from(u8::from(
                status_of(r, now) == Status::Up,
            ))))
        },
    ),
    (
        "sentinel_host_cpu_ratio",
        "gauge",
        "CPU busy share of the latest sample (0-1).",
        |r, _| Some(Num::F32(r.summary.cpu_percent / 100.0)),
    ),
    (
        "sentinel_host_cpu_iowait_ratio",
        "gauge",
        "CPU iowait share of the latest sample (0-1).",
        |r, _| Some(Num::F32(r.summary.cpu_iowait_percent / 100.0)),
    ),
    (
        "sentinel_host_memory_total_bytes",
        "gauge",
        "Total memory of the latest sample.",
        |r, _| Some(Num::F64(r.summary.mem_total_bytes as f64)),
    ),
    (
        "sentinel_host_memory_available_bytes",
        "gauge",
        "Available memory of the latest sample.",
        |r, _| Some(Num::F64(r.summary.mem_available_bytes as f64)),
    ),
    (
        "sentinel_host_memory_used_bytes",
        "gauge",
        "Used memory of the latest sample.",
        |r, _| Some(Num::F64(r.summary.mem_used_bytes as f64)),
    ),
    (
        "sentinel_host_swap_total_bytes",
        "gauge",
        "Total swap of the latest sample.",
        |r, _| Some(Num::F64(r.summary.swap_total_bytes as f64)),
    ),
    (
        "sentinel_host_swap_used_bytes",
        "gauge",
        "Used swap of the latest sample.",
        |r, _| Some(Num::F64(r.summary.swap_used_bytes as f64)),
    ),
    (
        "sentinel_host_load1",
        "gauge",
        "One-minute load average of the latest sample.",
        |r, _| Some(Num::F32(r.summary.load1)),
    ),
    (
        "sentinel_host_load5",
        "gauge",
        "Five-minute load average of the latest sample.",
        |r, _| Some(Num::F32(r.summary.load5)),
    ),
    (
        "sentinel_host_load15",
        "gauge",
        "Fifteen-minute load average of the latest sample.",
        |r, _| Some(Num::F32(r.summary.load15)),
    ),
    (
        "sentinel_host_uptime_seconds",
        "gauge",
        "Host uptime at the latest sample.",
        |r, _| Some(Num::F64(r.summary.uptime_s as f64)),
    ),
    (
        "sentinel_host_processes",
        "gauge",
        "Processes at the latest sample.",
        |r, _| Some(Num::F64(f64::from(r.summary.processes))),
    ),
    (
        "sentinel_host_network_receive_bytes_total",
        "counter",
        "Bytes received on the host's counted interfaces (the physical ones when it has any); never decreases (docs/CONTRACT.md).",
        |r, _| net_total(r).map(|t| Num::F64(t.rx_bytes as f64)),
    ),
    (
        "sentinel_host_network_transmit_bytes_total",
        "counter",
        "Bytes sent on the host's counted interfaces (the physical ones when it has any); never decreases (docs/CONTRACT.md).",
        |r, _| net_total(r).map(|t| Num::F64(t.tx_bytes as f64)),
    ),
    (
        "sentinel_host_disk_read_bytes_total",
        "counter",
        "Bytes read from disks (the agent's counters; resets when the agent restarts).",
        |r, _| (r.rate_base.valid == 1).then_some(Num::F64(r.rate_base.disk_read_bytes as f64)),
    ),
    (
        "sentinel_host_disk_written_bytes_total",
        "counter",
        "Bytes written to disks (the agent's counters; resets when the agent restarts).",
        |r, _| (r.rate_base.valid == 1).then_some(Num::F64(r.rate_base.disk_write_bytes as f64)),
    ),
    (
        "sentinel_host_last_seen_timestamp_seconds",
        "gauge",
        "Master receive time of the host's latest frame (unix seconds).",
        |r, _| Some(Num::F64(r.last_seen_ms as f64 / 1000.0)),
    ),
    (
        "sentinel_host_clock_offset_seconds",
        "gauge",
        "Agent clock minus master clock at the last handshake.",
        |r, _| Some(Num::F64(r.clock_offset_ms as f64 / 1000.0)),
    ),
    (
        "sentinel_host_connected",
        "gauge",
        "1 while the agent has a connection to the collector.",
        |r, _| Some(Num::F64(f64::from(r.connected))),
    ),
    (
        "sentinel_host_samples_received_total",
        "counter",
        "Distinct samples stored for the host (all runs).",
        |r, _| Some(Num::F64(r.samples_received as f64)),
    ),
    (
        "sentinel_host_samples_replayed_total",
        "counter",
        "Stored samples that arrived in a replay batch.",
        |r, _| Some(Num::F64(r.samples_replayed as f64)),
    ),
    (
        "sentinel_host_samples_dropped_total",
        "counter",
        "Samples the agent dropped from its full spool.",
        |r, _| Some(Num::F64(r.samples_dropped as f64)),
    ),
    (
        "sentinel_host_samples_missing_total",
        "counter",
        "Sequence gaps that no reported drop explains.",
        |r, _| Some(Num::F64(r.samples_missing as f64)),
    ),
    (
        "sentinel_host_samples_duplicate_total",
        "counter",
        "Samples received again that the table already held.",
        |r, _| Some(Num::F64(r.duplicates as f64)),
    ),
    (
        "sentinel_host_reconnects_total",
        "counter",
        "Handshakes after the first.",
        |r, _| Some(Num::F64(r.reconnects as f64)),
    ),
];

/// The host's network totals once it has reported a sample (`account::advance_net_totals`).
fn net_total(r: &Record) -> Option<NetTotals> {
    (r.net_totals != NetTotals::default()).then_some(r.net_totals)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn render(table: &Table, now: u64) -> String {
    let recs = records(table);
    let labels: Vec<String> = recs
        .iter()
        .map(|r| host_label_set(&r.hostname.get(), &r.agent_id(), r.labels_iter()))
        .collect();
    // About 50 bytes per line besides the label set, so the text is built without regrowing.
    let lines: usize = labels.iter().map(|l| l.len() + 50).sum();
    let mut out = String::with_capacity(4096 + HOST_FAMILIES.len() * lines);
    for (name, kind, help, get) in HOST_FAMILIES {
        family(&mut out, name, kind, help);
        for (r, l) in recs.iter().zip(&labels) {
            if let Some(v) = get(r, now) {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
    }
    let h = table.header();
    let alive = super::api::collector_alive(table);
    let age = boot_ms().saturating_sub(h.collector_heartbeat_boot_ms.load(Ordering::Acquire))
        as f64
        / 1000.0;
    let connected = recs.iter().filter(|r| r.connected == 1 && alive).count();
    let ingested: u64 = recs.iter().map(|r| r.samples_received).sum();
    let mut by_status = [0usize; 4];
    for r in &recs {
        by_status[status_of(r, now) as usize] += 1;
    }
    family(
        &mut out,
        "sentinel_master_hosts",
        "gauge",
        "Hosts in the table.",
    );
    let _ = writeln!(out, "sentinel_master_hosts {}", recs.len());
    family(
        &mut out,
        "sentinel_master_hosts_by_status",
        "gauge",
        "Hosts in the table by status.",
    );
    for s in [Status::Up, Status::Stale, Status::Down, Status::Stopped] {
        let _ = writeln!(
            out,
            "sentinel_master_hosts_by_status{{status=\"{}\"}} {}",
            s.as_str(),
            by_status[s as usize]
        );
    }
    family(
        &mut out,
        "sentinel_master_table_capacity",
        "gauge",
        "Host slots in the table.",
    );
    let _ = writeln!(out, "sentinel_master_table_capacity {}", table.capacity());
    family(
        &mut out,
        "sentinel_master_table_fill_ratio",
        "gauge",
        "Share of the table's host slots in use (0-1).",
    );
    let _ = writeln!(
        out,
        "sentinel_master_table_fill_ratio {}",
        recs.len() as f64 / f64::from(table.capacity().max(1))
    );
    family(
        &mut out,
        "sentinel_master_agent_connections",
        "gauge",
        "Agents connected to the collector now.",
    );
    let _ = writeln!(out, "sentinel_master_agent_connections {connected}");
    family(
        &mut out,
        "sentinel_master_samples_ingested_total",
        "counter",
        "Distinct samples stored in this table (sum over hosts; a master restart starts at 0).",
    );
    let _ = writeln!(out, "sentinel_master_samples_ingested_total {ingested}");
    family(
        &mut out,
        "sentinel_master_collector_heartbeat_age_seconds",
        "gauge",
        "Age of the collector's last heartbeat.",
    );
    let _ = writeln!(out, "sentinel_master_collector_heartbeat_age_seconds {age}");
    family(
        &mut out,
        "sentinel_master_collector_restarts_total",
        "counter",
        "Collector starts after the first (the table's generation counter minus one).",
    );
    let _ = writeln!(
        out,
        "sentinel_master_collector_restarts_total {}",
        h.generation.load(Ordering::Acquire).saturating_sub(1)
    );
    collector_counters(&mut out, &h.counters);
    let lifecycle = [
        (
            "sentinel_master_hosts_removed_total",
            "Hosts an operator removed (DELETE /api/v1/hosts/{id}, sentinel-master remove-host).",
            &h.lifecycle.hosts_removed,
        ),
        (
            "sentinel_master_hosts_expired_total",
            "Hosts removed because they were down or stopped longer than host_expiry.",
            &h.lifecycle.hosts_expired,
        ),
        (
            "sentinel_master_table_full_total",
            "New hosts refused busy because every host slot was taken (known hosts are never refused for it).",
            &h.lifecycle.table_full,
        ),
    ];
    for (name, help, v) in lifecycle {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    out
}

/// The collector's connection counters from the table header (kept across collector and,
/// through snapshots, master restarts).
fn collector_counters(out: &mut String, c: &CollectorCounters) {
    let plain = [
        (
            "sentinel_collector_connections_accepted_total",
            "TCP connections the collector accepted on the agent port (before limits and handshake).",
            &c.connections_accepted,
        ),
        (
            "sentinel_collector_handshakes_total",
            "Agent handshakes that ended in a welcome.",
            &c.handshakes,
        ),
        (
            "sentinel_collector_decode_errors_total",
            "Frames that could not be read (length over the limit, truncated) or decoded (not valid CBOR for an agent message); each also counts as a refusal with code invalid.",
            &c.decode_errors,
        ),
    ];
    for (name, help, v) in plain {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
    }
    family(
        out,
        "sentinel_collector_refusals_total",
        "counter",
        "Connections the collector refused, by the refused code sent (docs/PROTOCOL.md).",
    );
    for code in RefusalCode::ALL {
        let _ = writeln!(
            out,
            "sentinel_collector_refusals_total{{code=\"{}\"}} {}",
            code.as_str(),
            c.refused[code.index()].load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{account, Record, TestTable};
    use sentinel_protocol::{Hello, HostInfo, Sample};

    const NOW: u64 = 1_700_000_000_000;

    /// One host whose latest sample holds `cpu`, `iowait` and the three loads.
    fn table_with(cpu: f32, iowait: f32, loads: [f32; 3]) -> TestTable {
        let t = TestTable::new(2, 4);
        let w = t.table.writer().unwrap();
        let hello = Hello {
            version: 1,
            agent_id: "cccccccccccccccccccccccccccccccc".into(),
            run_id: 1,
            hostname: "floats".into(),
            interval_ms: 1000,
            clock_ms: NOW,
            agent_version: "1.0".into(),
            host: HostInfo::default(),
            proof: vec![0; 32],
            key: None,
            key_proof: None,
            labels: Default::default(),
        };
        let mut rec = Record::zeroed();
        account::handshake(&mut rec, &hello, "10.0.0.1:5000", NOW);
        let sample = Sample {
            seq: 1,
            ts_ms: NOW,
            cpu_percent: cpu,
            cpu_iowait_percent: iowait,
            load1: loads[0],
            load5: loads[1],
            load15: loads[2],
            mem_total_bytes: 1000,
            ..Sample::default()
        };
        let (_, point) = account::apply_sample(&mut rec, &sample, false, NOW);
        let mut cbor = Vec::new();
        sentinel_protocol::encode_sample(&sample, &mut cbor).unwrap();
        w.commit(0, rec, Some(&cbor), point);
        w.publish_host_count(1);
        drop(w);
        t
    }

    /// The value of `family`'s one host series.
    fn value<'a>(text: &'a str, family: &str) -> &'a str {
        let prefix = format!("{family}{{");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {family} series"));
        line.rsplit(' ').next().unwrap()
    }

    #[test]
    fn host_labels_follow_host_and_id_with_values_escaped() {
        let id = "cccccccccccccccccccccccccccccccc";
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[], ""),
            (&[("dc", "eu1"), ("role", "db")], r#",dc="eu1",role="db""#),
            // The three escapes of the text format; everything else is itself.
            (&[("note", r#"a"b\c"#)], r#",note="a\"b\\c""#),
            (&[("note", "line\nnext")], r#",note="line\nnext""#),
            (&[("city", "Zürich ☃ 東京")], r#",city="Zürich ☃ 東京""#),
            (&[("x", r#"\""#)], r#",x="\\\"""#),
        ];
        for (labels, want) in cases {
            assert_eq!(
                host_label_set("web-1", id, labels.iter().copied()),
                format!("host=\"web-1\",id=\"{id}\"{want}"),
                "{labels:?}"
            );
        }
    }

    #[test]
    fn every_host_family_carries_the_hosts_labels_and_an_unlabelled_host_only_host_and_id() {
        let t = TestTable::new(4, 4);
        let w = t.table.writer().unwrap();
        let hosts = [
            ("a".repeat(32), "db-1", vec![("role", "db"), ("dc", "eu1")]),
            ("b".repeat(32), "plain", vec![]),
            ("c".repeat(32), "odd", vec![("note", "x\"y\\z ☃")]),
        ];
        for (slot, (id, hostname, labels)) in hosts.iter().enumerate() {
            let hello = Hello {
                version: 1,
                agent_id: id.clone(),
                run_id: 1,
                hostname: (*hostname).into(),
                interval_ms: 1000,
                clock_ms: NOW,
                agent_version: "1.0".into(),
                host: HostInfo::default(),
                proof: vec![0; 32],
                key: None,
                key_proof: None,
                labels: labels
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            };
            let mut rec = Record::zeroed();
            account::handshake(&mut rec, &hello, "10.0.0.1:5000", NOW);
            let sample = Sample {
                seq: 1,
                ts_ms: NOW,
                ..Sample::default()
            };
            let (_, point) = account::apply_sample(&mut rec, &sample, false, NOW);
            w.commit(slot, rec, None, point);
        }
        w.publish_host_count(hosts.len());
        drop(w);
        let text = render(&t.table, NOW);
        let (a, b, c) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
        let sets = [
            format!(r#"{{host="db-1",id="{a}",dc="eu1",role="db"}} "#),
            format!(r#"{{host="plain",id="{b}"}} "#),
            format!(r#"{{host="odd",id="{c}",note="x\"y\\z ☃"}} "#),
        ];
        let mut families_with_series = 0;
        for (family, ..) in HOST_FAMILIES {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .collect();
            if lines.is_empty() {
                continue; // a family these hosts have no value for yet (net/disk counters)
            }
            families_with_series += 1;
            // One line per host, each with exactly that host's label set.
            assert_eq!(lines.len(), hosts.len(), "{family}\n{text}");
            for set in &sets {
                let line = format!("{family}{set}");
                assert!(lines.iter().any(|l| l.starts_with(&line)), "{line}\n{text}");
            }
        }
        assert!(
            families_with_series >= HOST_FAMILIES.len() - 4,
            "{families_with_series}"
        );
    }

    #[test]
    fn a_label_a_damaged_table_could_hold_is_never_a_duplicate_or_unparsable() {
        // What validation refuses at the hello, but a damaged image could still hold.
        let labels = [
            ("1x", "a"),
            ("__name__", "b"),
            ("bad-name", "c"),
            ("dc", "eu1"),
            ("dc", "eu2"),
            ("host", "evil"),
            ("id", "evil"),
            ("role", "db"),
        ];
        assert_eq!(
            host_label_set("h", "i", labels),
            r#"host="h",id="i",dc="eu1",role="db""#
        );
        for (name, ok) in [
            ("role", true),
            ("_x9", true),
            ("Role_2", true),
            ("", false),
            ("9a", false),
            ("__x", false),
            ("a.b", false),
            ("é", false),
            ("host", false),
            ("id", false),
        ] {
            assert_eq!(usable_host_label(name), ok, "{name:?}");
        }
    }

    #[test]
    fn f32_values_are_printed_in_their_shortest_form_and_round_trip() {
        let cases: [(f32, f32, [f32; 3]); 4] = [
            (23.4, 1.7, [2.39, 0.1, 17.0]),
            (99.99, 0.01, [0.3, 1e-3, 123.456]),
            (0.0, 100.0, [0.0, 65504.0, 3.4e38]),
            (33.333332, 7.1234565, [1.0e-7, 12345.678, 0.5]),
        ];
        for (cpu, iowait, loads) in cases {
            let t = table_with(cpu, iowait, loads);
            let text = render(&t.table, NOW);
            let expect = [
                ("sentinel_host_cpu_ratio", cpu / 100.0),
                ("sentinel_host_cpu_iowait_ratio", iowait / 100.0),
                ("sentinel_host_load1", loads[0]),
                ("sentinel_host_load5", loads[1]),
                ("sentinel_host_load15", loads[2]),
            ];
            for (family, want) in expect {
                let printed = value(&text, family);
                let parsed: f32 = printed
                    .parse()
                    .unwrap_or_else(|e| panic!("{family} {printed}: {e}"));
                assert_eq!(parsed, want, "{family} {printed} does not round-trip");
                // Shortest: no shorter decimal parses to the same f32 (Rust's Display is
                // that shortest form; ryu gives the same digits).
                assert_eq!(printed, want.to_string(), "{family}");
                let all: String = printed.chars().filter(char::is_ascii_digit).collect();
                let digits = all.trim_matches('0').len();
                assert!(
                    digits <= 9,
                    "{family} {printed}: {digits} significant digits"
                );
            }
        }
        let t = table_with(23.4, 1.7, [2.39, 0.1, 17.0]);
        let text = render(&t.table, NOW);
        assert_eq!(value(&text, "sentinel_host_load1"), "2.39");
        assert_eq!(value(&text, "sentinel_host_cpu_ratio"), "0.234");
    }
}
