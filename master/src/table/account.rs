//! Bookkeeping of one host's record: handshakes, samples (dedupe, gaps, drops), goodbye.
//! Pure functions on a [`Record`] copy; the collector commits the result.

use sentinel_protocol::{Hello, Sample};

use sentinel_protocol::Interface;

use super::layout::{HistoryPoint, NetTotals, Record};

/// What became of one received sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New: counted and stored.
    Stored,
    /// `seq <= last_seq` of the current run: counted in `duplicates` only (still acked).
    Duplicate,
}

/// Applies a completed handshake; returns the `last_seq` for the welcome (0 for a new run).
pub fn handshake(rec: &mut Record, hello: &Hello, address: &str, now_ms: u64) -> u64 {
    if rec.in_use == 0 || rec.first_seen_ms == 0 {
        rec.first_seen_ms = now_ms;
    }
    rec.in_use = 1;
    let id = hello.agent_id.as_bytes();
    let n = id.len().min(rec.agent_id.len());
    rec.agent_id = [0; 32];
    rec.agent_id[..n].copy_from_slice(&id[..n]);
    if rec.handshakes > 0 {
        rec.reconnects += 1;
    }
    rec.handshakes += 1;
    if rec.handshakes == 1 || rec.run_id != hello.run_id {
        rec.run_id = hello.run_id;
        rec.last_seq = 0;
        rec.run_dropped = 0;
        rec.rate_base.valid = 0;
    }
    rec.connected = 1;
    rec.goodbye = 0;
    rec.last_seen_ms = now_ms;
    rec.interval_ms = hello.interval_ms;
    // clock_ms is whatever the agent claims (up to u64::MAX): saturate, never overflow.
    rec.clock_offset_ms = (i128::from(hello.clock_ms) - i128::from(now_ms))
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    rec.cpu_count = hello.host.cpu_count;
    rec.hostname.set(&hello.hostname);
    rec.address.set(address);
    rec.agent_version.set(&hello.agent_version);
    rec.os.set(&hello.host.os);
    rec.kernel.set(&hello.host.kernel);
    rec.arch.set(&hello.host.arch);
    rec.cpu_model.set(&hello.host.cpu_model);
    // The hello's labels are the host's whole set from now on (the session merged master.toml
    // `[[host_labels]]` into them): a label the agent dropped is gone.
    rec.set_labels(&hello.labels);
    rec.last_seq
}

/// Accounts one validated sample of the current run. On `Stored` the caller commits the
/// returned history point and the sample bytes with the record.
pub fn apply_sample(
    rec: &mut Record,
    s: &Sample,
    replayed: bool,
    now_ms: u64,
) -> (Outcome, Option<HistoryPoint>) {
    rec.last_seen_ms = now_ms;
    if s.seq <= rec.last_seq {
        rec.duplicates += 1;
        return (Outcome::Duplicate, None);
    }
    // A gap is explained by the drops the agent reported since the last stored sample; drops
    // of samples the master already held (stored but not yet acked) explain nothing.
    // Sums over runs of hostile sequence numbers (a run that jumps to u64::MAX) saturate.
    let gap = s.seq - rec.last_seq - 1;
    let drop_delta = s.dropped.saturating_sub(rec.run_dropped);
    let explained = gap.min(drop_delta);
    rec.samples_dropped = rec.samples_dropped.saturating_add(explained);
    if rec.last_seq == 0 {
        // The first sample of this run in this table: what precedes it and no drop explains
        // was acked by an earlier master instance (the table starts empty), not lost.
        rec.samples_before_start = rec.samples_before_start.saturating_add(gap - explained);
    } else {
        rec.samples_missing = rec.samples_missing.saturating_add(gap - explained);
    }
    rec.run_dropped = rec.run_dropped.max(s.dropped);
    rec.last_seq = s.seq;
    rec.samples_received += 1;
    if replayed {
        rec.samples_replayed += 1;
    }
    rec.summary = super::layout::Summary {
        ts_ms: s.ts_ms,
        seq: s.seq,
        mem_total_bytes: s.mem_total_bytes,
        mem_available_bytes: s.mem_available_bytes,
        mem_used_bytes: s.mem_used_bytes,
        swap_total_bytes: s.swap_total_bytes,
        swap_used_bytes: s.swap_used_bytes,
        uptime_s: s.uptime_s,
        cpu_percent: s.cpu_percent,
        cpu_user_percent: s.cpu_user_percent,
        cpu_system_percent: s.cpu_system_percent,
        cpu_iowait_percent: s.cpu_iowait_percent,
        cpu_steal_percent: s.cpu_steal_percent,
        load1: s.load1,
        load5: s.load5,
        load15: s.load15,
        processes: s.processes,
        _pad: 0,
    };
    (Outcome::Stored, Some(history_point(rec, s)))
}

/// The history point of `s`, with rates from the previous stored sample of the run (0 for the
/// first one, or after a counter reset), and advances the rate base.
fn history_point(rec: &mut Record, s: &Sample) -> HistoryPoint {
    let reading = net_reading(&s.interfaces);
    let (rx, tx, _) = reading;
    let base = rec.rate_base;
    let prev = (base.valid == 1).then_some((base.net_rx_bytes, base.net_tx_bytes));
    let (rx_added, tx_added) = advance_net_totals(&mut rec.net_totals, prev, reading);
    let dt_s = s.ts_ms.saturating_sub(base.ts_ms) as f64 / 1000.0;
    let rate = |now: u64, prev: u64| -> f32 {
        if base.valid == 0 || dt_s <= 0.0 || now < prev {
            0.0
        } else {
            ((now - prev) as f64 / dt_s) as f32
        }
    };
    // The network's increase comes from the totals (counted interfaces, set unchanged).
    let per_s = |added: u64| -> f32 {
        if base.valid == 0 || dt_s <= 0.0 {
            0.0
        } else {
            (added as f64 / dt_s) as f32
        }
    };
    let point = HistoryPoint {
        ts_ms: s.ts_ms,
        mem_used_bytes: s.mem_used_bytes,
        cpu_percent: s.cpu_percent,
        load1: s.load1,
        net_rx_bytes_per_s: per_s(rx_added),
        net_tx_bytes_per_s: per_s(tx_added),
        disk_read_bytes_per_s: rate(s.disk_read_bytes, base.disk_read_bytes),
        disk_write_bytes_per_s: rate(s.disk_write_bytes, base.disk_write_bytes),
    };
    rec.rate_base = super::layout::RateBase {
        valid: 1,
        ts_ms: s.ts_ms,
        net_rx_bytes: rx,
        net_tx_bytes: tx,
        disk_read_bytes: s.disk_read_bytes,
        disk_write_bytes: s.disk_write_bytes,
    };
    point
}

/// The interfaces a host's network figures count (docs/CONTRACT.md): the physical ones when
/// the agent classified at least one interface as physical; otherwise all of them (a
/// container's or network namespace's veth is its only way out, and agents before 0.2 do not
/// classify). Traffic that crosses a bridge, bond or veth on its way out of the host is then
/// counted once, on the physical device.
pub fn counted_interfaces(list: &[Interface]) -> impl Iterator<Item = &Interface> {
    let physical_only = list.iter().any(|i| i.is_virtual == Some(false));
    list.iter()
        .filter(move |i| !physical_only || i.is_virtual == Some(false))
}

/// Sums of the counted interfaces' counters and the hash of their names.
pub fn net_reading(list: &[Interface]) -> (u64, u64, u64) {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let (mut rx, mut tx) = (0u64, 0u64);
    for i in counted_interfaces(list) {
        rx = rx.wrapping_add(i.rx_bytes);
        tx = tx.wrapping_add(i.tx_bytes);
        for b in i.name.bytes().chain([0]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (rx, tx, hash)
}

/// Advances `totals` from the previous reading (`prev`, None when the run has none) to `now`
/// (from [`net_reading`]); returns the bytes added (rx, tx), which are also the interval's
/// traffic for the rate. An interval adds nothing when the set of counted interfaces changed
/// or a sum went down (an interface vanished, the host rebooted): its traffic is unknown, and
/// a decrease must never reach the counter. The first reading a host ever gives seeds the
/// totals with its sums, so the series starts where the kernel's counters are (and continues
/// where a 0.1.0 master's sum left off).
pub fn advance_net_totals(
    totals: &mut NetTotals,
    prev: Option<(u64, u64)>,
    now: (u64, u64, u64),
) -> (u64, u64) {
    let (rx, tx, names) = now;
    let seeded = *totals != NetTotals::default();
    let same_set = seeded && totals.names_hash == names;
    totals.names_hash = names;
    if !seeded {
        totals.rx_bytes = rx;
        totals.tx_bytes = tx;
        return (0, 0);
    }
    let Some((prx, ptx)) = prev.filter(|_| same_set) else {
        return (0, 0);
    };
    if rx < prx || tx < ptx {
        return (0, 0);
    }
    let added = (rx - prx, tx - ptx);
    totals.rx_bytes = totals.rx_bytes.saturating_add(added.0);
    totals.tx_bytes = totals.tx_bytes.saturating_add(added.1);
    added
}

/// A planned stop: the host shows `stopped` until it reconnects.
pub fn goodbye(rec: &mut Record, now_ms: u64) {
    rec.goodbye = 1;
    rec.connected = 0;
    rec.last_seen_ms = now_ms;
}

#[cfg(test)]
mod tests {
    use super::*;
    use sentinel_protocol::HostInfo;

    fn hello(run_id: u64) -> Hello {
        Hello {
            version: 1,
            agent_id: "0123456789abcdef0123456789abcdef".into(),
            run_id,
            hostname: "web-1".into(),
            interval_ms: 1000,
            clock_ms: 1_000,
            agent_version: "0.1.0".into(),
            host: HostInfo::default(),
            proof: vec![0; 32],
            key: None,
            key_proof: None,
            labels: Default::default(),
        }
    }

    fn sample(seq: u64, dropped: u64) -> Sample {
        Sample {
            seq,
            ts_ms: seq * 1000,
            dropped,
            ..Sample::default()
        }
    }

    /// (seq, dropped) sequences for one run -> (received, dropped, missing, duplicates, last_seq).
    #[test]
    fn dedupe_gap_and_drop_accounting() {
        type Case = (
            &'static str,
            &'static [(u64, u64)],
            (u64, u64, u64, u64, u64),
        );
        let cases: &[Case] = &[
            ("in order", &[(1, 0), (2, 0), (3, 0)], (3, 0, 0, 0, 3)),
            (
                "duplicate resend",
                &[(1, 0), (2, 0), (2, 0), (1, 0), (3, 0)],
                (3, 0, 0, 2, 3),
            ),
            ("gap explained by drops", &[(1, 0), (5, 3)], (2, 3, 0, 0, 5)),
            ("gap partly explained", &[(1, 0), (6, 2)], (2, 2, 2, 0, 6)),
            ("gap unexplained", &[(1, 0), (4, 0)], (2, 0, 2, 0, 4)),
            (
                "prefix acked by an earlier master is not missing",
                &[(4, 0), (5, 0), (7, 0)],
                (3, 0, 1, 0, 7),
            ),
            (
                "prefix partly explained by drops",
                &[(6, 2), (7, 2)],
                (2, 2, 0, 0, 7),
            ),
            (
                "drops of already held samples explain nothing",
                &[(1, 0), (2, 5), (3, 5)],
                (3, 0, 0, 0, 3),
            ),
            (
                "first sample after start-up drops",
                &[(4, 3), (5, 3)],
                (2, 3, 0, 0, 5),
            ),
            (
                "old sample after a gap is a duplicate",
                &[(1, 0), (3, 0), (2, 0)],
                (2, 0, 1, 1, 3),
            ),
        ];
        for (name, seqs, want) in cases {
            let mut rec = Record::zeroed();
            handshake(&mut rec, &hello(7), "127.0.0.1:1", 10);
            for &(seq, dropped) in seqs.iter() {
                apply_sample(&mut rec, &sample(seq, dropped), false, 20);
            }
            let got = (
                rec.samples_received,
                rec.samples_dropped,
                rec.samples_missing,
                rec.duplicates,
                rec.last_seq,
            );
            assert_eq!(got, *want, "{name}");
            assert_eq!(
                rec.samples_received
                    + rec.samples_dropped
                    + rec.samples_missing
                    + rec.samples_before_start,
                rec.last_seq,
                "invariant: {name}"
            );
        }
    }

    #[test]
    fn new_run_resets_last_seq_but_counters_accumulate() {
        let mut rec = Record::zeroed();
        assert_eq!(handshake(&mut rec, &hello(1), "a", 10), 0);
        apply_sample(&mut rec, &sample(1, 0), false, 11);
        apply_sample(&mut rec, &sample(2, 0), true, 12);
        assert_eq!(
            handshake(&mut rec, &hello(1), "a", 13),
            2,
            "same run resumes"
        );
        assert_eq!(
            handshake(&mut rec, &hello(2), "a", 14),
            0,
            "new run starts over"
        );
        assert_eq!(
            apply_sample(&mut rec, &sample(1, 0), false, 15).0,
            Outcome::Stored
        );
        assert_eq!(
            (
                rec.samples_received,
                rec.samples_replayed,
                rec.reconnects,
                rec.last_seq
            ),
            (3, 1, 2, 1)
        );
    }

    #[test]
    fn rates_come_from_consecutive_cumulative_counters() {
        let mut rec = Record::zeroed();
        handshake(&mut rec, &hello(1), "a", 10);
        let mut s1 = sample(1, 0);
        s1.disk_read_bytes = 1000;
        let mut s2 = sample(2, 0);
        s2.ts_ms = s1.ts_ms + 2000;
        s2.disk_read_bytes = 5000;
        let p1 = apply_sample(&mut rec, &s1, false, 11).1.unwrap();
        let p2 = apply_sample(&mut rec, &s2, false, 12).1.unwrap();
        assert_eq!(p1.disk_read_bytes_per_s, 0.0);
        assert_eq!(p2.disk_read_bytes_per_s, 2000.0);
    }

    fn iface(name: &str, rx: u64, tx: u64, is_virtual: Option<bool>) -> Interface {
        Interface {
            name: name.into(),
            rx_bytes: rx,
            tx_bytes: tx,
            is_virtual,
        }
    }

    #[test]
    fn totals_count_physical_interfaces_when_there_are_any() {
        let host = [
            iface("br0", 500, 500, Some(true)),
            iface("eth0", 100, 10, Some(false)),
            iface("eth1", 200, 20, Some(false)),
            iface("veth9", 400, 400, Some(true)),
        ];
        assert_eq!(
            net_reading(&host).0,
            300,
            "bridge and veth not counted twice"
        );
        assert_eq!(net_reading(&host).1, 30);
        let container = [
            iface("eth0", 7, 1, Some(true)),
            iface("veth1", 3, 1, Some(true)),
        ];
        assert_eq!(net_reading(&container).0, 10, "only virtual: all count");
        let old_agent = [iface("eth0", 7, 1, None), iface("docker0", 3, 1, None)];
        assert_eq!(
            net_reading(&old_agent).0,
            10,
            "unclassified (0.1.0): all count"
        );
    }

    /// (interfaces of consecutive samples) -> the exported rx total after each.
    #[test]
    fn totals_never_go_backwards() {
        type Step = &'static [(&'static str, u64)];
        let cases: &[(&str, &[Step], &[u64])] = &[
            (
                "steady",
                &[&[("eth0", 100)], &[("eth0", 150)], &[("eth0", 175)]],
                &[100, 150, 175],
            ),
            (
                "an interface disappears",
                &[
                    &[("eth0", 100), ("wg0", 1000)],
                    &[("eth0", 110)],
                    &[("eth0", 130)],
                ],
                &[1100, 1100, 1120],
            ),
            (
                "an interface appears with old counters",
                &[
                    &[("eth0", 100)],
                    &[("eth0", 110), ("eth1", 5000)],
                    &[("eth0", 120), ("eth1", 5001)],
                ],
                &[100, 100, 111],
            ),
            (
                "host reboot",
                &[&[("eth0", 9000)], &[("eth0", 10)], &[("eth0", 30)]],
                &[9000, 9000, 9020],
            ),
        ];
        for (name, steps, want) in cases {
            let mut totals = NetTotals::default();
            let mut prev = None;
            let mut got = Vec::new();
            for step in steps.iter() {
                let list: Vec<_> = step
                    .iter()
                    .map(|(n, rx)| iface(n, *rx, 0, Some(false)))
                    .collect();
                let now = net_reading(&list);
                advance_net_totals(&mut totals, prev, now);
                prev = Some((now.0, now.1));
                got.push(totals.rx_bytes);
            }
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn goodbye_marks_stopped_until_the_next_handshake() {
        let mut rec = Record::zeroed();
        handshake(&mut rec, &hello(1), "a", 10);
        goodbye(&mut rec, 11);
        assert_eq!((rec.goodbye, rec.connected), (1, 0));
        handshake(&mut rec, &hello(2), "a", 12);
        assert_eq!((rec.goodbye, rec.connected), (0, 1));
    }
}
