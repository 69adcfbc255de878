//! Frame encode/decode of a realistic sample (`cargo bench -p sentinel-protocol`): the
//! agent encodes one per interval, the collector decodes one per sample per agent.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sentinel_protocol::*;

/// What a typical small server reports: 4 cores, 2 filesystems, 2 interfaces.
pub fn sample(seq: u64) -> Sample {
    Sample {
        seq,
        ts_ms: 1_764_000_000_000 + seq * 1000,
        cpu_percent: 12.5,
        cpu_user_percent: 8.25,
        cpu_system_percent: 3.5,
        cpu_iowait_percent: 0.5,
        cpu_steal_percent: 0.25,
        cpu_cores_percent: vec![10.0, 15.5, 7.25, 17.0],
        load1: 0.42,
        load5: 0.37,
        load15: 0.31,
        mem_total_bytes: 16 << 30,
        mem_available_bytes: 9_876_543_210,
        mem_used_bytes: 7_303_221_862,
        swap_total_bytes: 2 << 30,
        swap_used_bytes: 12_345_678,
        filesystems: vec![
            Filesystem {
                mount: "/".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                available_bytes: 41_234_567_890,
                free_bytes: Some(46_234_567_890),
            },
            Filesystem {
                mount: "/var/lib".into(),
                fs_type: "xfs".into(),
                total_bytes: 500 << 30,
                available_bytes: 91_234_567_890,
                free_bytes: Some(91_234_567_890),
            },
        ],
        interfaces: vec![
            Interface {
                name: "eth0".into(),
                rx_bytes: 123_456_789_012,
                tx_bytes: 23_456_789_012,
                is_virtual: None,
            },
            Interface {
                name: "eth1".into(),
                rx_bytes: 3_456_789_012,
                tx_bytes: 456_789_012,
                is_virtual: None,
            },
        ],
        disk_read_bytes: 45_678_901_234,
        disk_write_bytes: 156_789_012_345,
        uptime_s: 1_234_567,
        boot_time_s: 1_762_765_433,
        processes: 187,
        dropped: 0,
    }
}

fn frames(c: &mut Criterion) {
    let msg = AgentMessage::Sample(sample(42));
    let mut frame = Vec::new();
    encode_frame(&msg, &mut frame).unwrap();
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("encode sample ({} bytes)", frame.len()), |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            encode_frame(std::hint::black_box(&msg), &mut out).unwrap();
        })
    });
    g.bench_function("split + decode sample", |b| {
        b.iter(|| {
            let (body, _) = split_frame(std::hint::black_box(&frame)).unwrap().unwrap();
            let m: AgentMessage = decode_body(body).unwrap();
            if let AgentMessage::Sample(s) = &m {
                s.validate().unwrap();
            }
            m
        })
    });
    let batch = AgentMessage::Batch(Batch {
        samples: (1..=64).map(sample).collect(),
    });
    let mut batch_frame = Vec::new();
    encode_frame(&batch, &mut batch_frame).unwrap();
    g.throughput(Throughput::Elements(64));
    g.bench_function(
        format!("decode batch of 64 ({} bytes)", batch_frame.len()),
        |b| {
            b.iter_batched(
                || batch_frame.clone(),
                |f| decode_body::<AgentMessage>(split_frame(&f).unwrap().unwrap().0).unwrap(),
                BatchSize::SmallInput,
            )
        },
    );
    g.finish();
    // What the master's fleet view reads per host: a stored sample's filesystems.
    let mut stored = Vec::new();
    encode_sample(&sample(42), &mut stored).unwrap();
    let mut g = c.benchmark_group("stored sample");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_sample (all fields)", |b| {
        b.iter(|| decode_sample(std::hint::black_box(&stored)).unwrap())
    });
    g.bench_function("decode_filesystems (fs only)", |b| {
        b.iter(|| decode_filesystems(std::hint::black_box(&stored)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
