//! Table write and read paths (`cargo bench -p sentinel-master --bench table`): the collector
//! commits one sample per agent per interval under the lock with the seqlock; the http process
//! copies records without locking. The table lives in heap memory here (same layout and code
//! as the shared segment), so the figures are the code's, not /dev/shm's.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sentinel_master::table::{account, layout, Table};
use sentinel_protocol::*;

const CAPACITY: u32 = 1000;
const POINTS: u32 = 600;

fn sample(seq: u64) -> Sample {
    Sample {
        seq,
        ts_ms: 1_764_000_000_000 + seq * 1000,
        cpu_percent: 12.5,
        cpu_cores_percent: vec![10.0, 15.5, 7.25, 17.0],
        load1: 0.42,
        mem_total_bytes: 16 << 30,
        mem_available_bytes: 9 << 30,
        mem_used_bytes: 7 << 30,
        filesystems: vec![Filesystem {
            mount: "/".into(),
            fs_type: "ext4".into(),
            total_bytes: 100 << 30,
            available_bytes: 41 << 30,
            free_bytes: None,
        }],
        interfaces: vec![Interface {
            name: "eth0".into(),
            rx_bytes: seq * 1000,
            tx_bytes: seq * 100,
            is_virtual: None,
        }],
        ..Sample::default()
    }
}

fn table(c: &mut Criterion) {
    let mut mem = vec![0u64; layout::segment_size(CAPACITY, POINTS).div_ceil(8)];
    let len = mem.len() * 8;
    // SAFETY: an 8-aligned zeroed buffer of the segment's size, used by this process only.
    let table =
        unsafe { Table::init(mem.as_mut_ptr() as *mut u8, len, CAPACITY, POINTS, 1, 1) }.unwrap();
    table.reinit_lock().unwrap();
    let writer = table.writer().unwrap();
    let mut seqs = vec![0u64; CAPACITY as usize];
    let mut body = Vec::new();
    sentinel_protocol::frame::encode_body(&sample(1), &mut body).unwrap();

    let mut g = c.benchmark_group("table");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("write: account + commit one sample", |b| {
        b.iter(|| {
            i = (i + 1) % CAPACITY as usize;
            seqs[i] += 1;
            let s = sample(seqs[i]);
            let mut rec = writer.record(i);
            let (_, point) = account::apply_sample(&mut rec, &s, false, s.ts_ms);
            writer.commit(i, rec, Some(&body), point);
        })
    });
    let mut j = 0usize;
    g.bench_function("read: one record (seqlock copy)", |b| {
        b.iter(|| {
            j = (j + 1) % CAPACITY as usize;
            table.read_record(j)
        })
    });
    g.bench_function("read: one host detail (record + sample + history)", |b| {
        b.iter(|| {
            j = (j + 1) % CAPACITY as usize;
            table.read_detail(j)
        })
    });
    g.finish();
    drop(writer);
    drop(mem);
}

criterion_group!(benches, table);
criterion_main!(benches);
