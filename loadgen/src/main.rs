//! `sentinel-loadgen`: many simulated agents speaking the real protocol (handshake with the
//! HMAC proof, samples or replay batches, cumulative acks) against a master, and a null sink
//! that only reads and discards whole frames, so a run can be compared with the cost of the
//! network and framing alone. Reports what was sent and acknowledged, and ack latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use sentinel_protocol::frame::{codec, PREFIX_BYTES};
use sentinel_protocol::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulated agents against a master (or a sink).
    Run(RunArgs),
    /// Latency of HTTP GETs, one at a time (e.g. /api/v1/hosts or /metrics while `run` loads
    /// the master from another process).
    Probe {
        #[arg(long)]
        http: SocketAddr,
        #[arg(long, default_value = "/api/v1/hosts")]
        path: String,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Start a request this often (like a dashboard polling) instead of back to back.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        #[arg(long)]
        json: bool,
    },
    /// Freshness: one more agent sends a sample every interval and polls the HTTP API until the
    /// sample is visible; reports sample timestamp -> visible over HTTP.
    Freshness {
        #[arg(long)]
        master: SocketAddr,
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        #[arg(long, default_value_t = 30)]
        samples: usize,
        #[arg(long)]
        json: bool,
    },
    /// SSE fan-out: `clients` readers of /api/v1/events and one more agent sending a sample
    /// every interval; reports sample sent -> event received, over every client and sample.
    SseFanout {
        #[arg(long)]
        master: SocketAddr,
        #[arg(long)]
        http: SocketAddr,
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        #[arg(long, default_value_t = 20)]
        samples: usize,
        #[arg(long)]
        json: bool,
    },
    /// A receiver that completes the handshake, then reads and discards whole frames, acking
    /// each one; the baseline for `run`.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        /// Copy every received frame after the handshake (prefix included) to stdout, so the
        /// bytes an agent puts on the wire can be counted (docs/BENCHMARKS.md).
        #[arg(long)]
        dump: bool,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[arg(long)]
    master: SocketAddr,
    /// Number of simulated agents (one TCP connection each).
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Cadence of each agent; ignored with --flood.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to stream after all agents connected.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Send as fast as acks allow, keeping up to --window frames unacknowledged per agent.
    #[arg(long)]
    flood: bool,
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Samples per frame: 1 sends `sample` frames, more sends replay `batch` frames.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Prefix of the simulated hostnames and ids, so several generators can share a master.
    #[arg(long, default_value_t = 0)]
    id_base: u64,
    /// Also report the CPU use of this process (e.g. the master's collector) over the
    /// measurement window, as percent of one core.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Text the simulated hosts report as agent_version, os, kernel, cpu_model and first
    /// mount point (hostile-input tests: the dashboard must show it as text).
    #[arg(long)]
    host_text: Option<String>,
    /// A label every simulated host sends, NAME=VALUE (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// NAME=V1,V2,...: simulated host n (the number in its hostname, `load-{n}`) gets the
    /// value V[n % count] (repeatable).
    #[arg(long = "label-cycle", value_name = "NAME=V1,V2,...", value_parser = parse_label_cycle)]
    label_cycles: Vec<(String, Vec<String>)>,
    /// NAME=DIV: simulated host n gets the value n / DIV in decimal, e.g. `shard=100` makes
    /// shards of 100 hosts (repeatable).
    #[arg(long = "label-index", value_name = "NAME=DIV", value_parser = parse_label_index)]
    label_indexes: Vec<(String, u64)>,
}

fn parse_label(arg: &str) -> Result<(String, String), String> {
    sentinel_protocol::labels::parse_assignment(arg)
}

fn parse_label_cycle(arg: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = arg.split_once('=').ok_or("expected NAME=V1,V2,...")?;
    let values: Vec<String> = values.split(',').map(str::to_owned).collect();
    for v in &values {
        sentinel_protocol::labels::validate_one(name, v).map_err(|e| e.to_string())?;
    }
    Ok((name.to_owned(), values))
}

fn parse_label_index(arg: &str) -> Result<(String, u64), String> {
    let (name, div) = arg.split_once('=').ok_or("expected NAME=DIV")?;
    let div: u64 = div
        .parse()
        .ok()
        .filter(|&d| d > 0)
        .ok_or("DIV must be a positive integer")?;
    sentinel_protocol::labels::validate_one(name, "0").map_err(|e| e.to_string())?;
    Ok((name.to_owned(), div))
}

/// Simulated host `n`'s labels: a pure function of `n` and the label flags (in the order
/// --label, --label-cycle, --label-index; a later one of the same name wins), so a test can
/// compute which hosts a filter matches.
fn sim_labels(args: &RunArgs, n: u64) -> std::collections::BTreeMap<String, String> {
    let mut labels: std::collections::BTreeMap<String, String> =
        args.labels.iter().cloned().collect();
    for (name, values) in &args.label_cycles {
        labels.insert(
            name.clone(),
            values[(n % values.len() as u64) as usize].clone(),
        );
    }
    for (name, div) in &args.label_indexes {
        labels.insert(name.clone(), (n / div).to_string());
    }
    labels
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters shared by every simulated agent.
#[derive(Default)]
struct Totals {
    connected: AtomicU64,
    failed: AtomicU64,
    samples_sent: AtomicU64,
    samples_acked: AtomicU64,
}

/// A plausible, varying sample for agent `i`.
fn sample(i: u64, seq: u64, rng: &mut fastrand::Rng) -> Sample {
    let cpu = rng.f32() * 60.0;
    let t = seq * 1000;
    Sample {
        seq,
        ts_ms: unix_ms(),
        dropped: 0,
        cpu_percent: cpu,
        cpu_user_percent: cpu * 0.7,
        cpu_system_percent: cpu * 0.25,
        cpu_iowait_percent: cpu * 0.04,
        cpu_steal_percent: cpu * 0.01,
        cpu_cores_percent: (0..4).map(|_| rng.f32() * 100.0).collect(),
        load1: rng.f32() * 4.0,
        load5: 1.5,
        load15: 1.2,
        mem_total_bytes: 16 << 30,
        mem_available_bytes: (8 << 30) + rng.u64(0..1 << 30),
        mem_used_bytes: (7 << 30) + rng.u64(0..1 << 30),
        swap_total_bytes: 2 << 30,
        swap_used_bytes: 1 << 20,
        filesystems: vec![
            Filesystem {
                mount: "/".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                available_bytes: 40 << 30,
                free_bytes: None,
            },
            Filesystem {
                mount: "/var".into(),
                fs_type: "xfs".into(),
                total_bytes: 500 << 30,
                available_bytes: 90 << 30,
                free_bytes: None,
            },
        ],
        interfaces: vec![Interface {
            name: "eth0".into(),
            rx_bytes: t * 12_000 + i,
            tx_bytes: t * 3_000,
            is_virtual: None,
        }],
        disk_read_bytes: t * 4096,
        disk_write_bytes: t * 16_384,
        uptime_s: 100_000 + seq,
        boot_time_s: 1_764_000_000,
        processes: 180 + rng.u32(0..20),
    }
}

fn encode(msg: &AgentMessage) -> Result<Bytes> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf)?;
    Ok(Bytes::from(buf).slice(PREFIX_BYTES..))
}

async fn read_master(conn: &mut Framed<TcpStream, LengthDelimitedCodec>) -> Result<MasterMessage> {
    let body = conn
        .next()
        .await
        .ok_or_else(|| anyhow!("master closed the connection"))??;
    Ok(decode_body(&body)?)
}

async fn connect(
    args: &RunArgs,
    i: u64,
    token: &[u8],
) -> Result<Framed<TcpStream, LengthDelimitedCodec>> {
    let stream = TcpStream::connect(args.master).await?;
    stream.set_nodelay(true)?;
    let mut conn = Framed::new(stream, codec());
    let MasterMessage::Challenge(ch) = read_master(&mut conn).await? else {
        bail!("expected challenge")
    };
    let nonce: Nonce = ch.nonce.as_slice().try_into()?;
    let agent_id = sim_agent_id(args.id_base + i);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        agent_id: agent_id.clone(),
        run_id: fastrand::u64(..),
        hostname: format!("load-{:05}", args.id_base + i),
        interval_ms: args.interval.as_millis().clamp(100, 300_000) as u32,
        clock_ms: unix_ms(),
        agent_version: concat!("loadgen-", env!("CARGO_PKG_VERSION")).into(),
        host: HostInfo {
            os: "Loadgen Linux".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            cpu_model: "sim".into(),
            cpu_count: 4,
        },
        proof: proof(token, &nonce, &agent_id).to_vec(),
        key: None,
        key_proof: None,
        labels: sim_labels(args, args.id_base + i),
    };
    let mut hello = hello;
    if let Some(text) = &args.host_text {
        hello.agent_version.clone_from(text);
        hello.host.os.clone_from(text);
        hello.host.kernel.clone_from(text);
        hello.host.cpu_model.clone_from(text);
    }
    conn.send(encode(&AgentMessage::Hello(hello))?).await?;
    match read_master(&mut conn).await? {
        MasterMessage::Welcome(_) => Ok(conn),
        MasterMessage::Refused(r) => bail!("refused: {} {}", r.code, r.reason),
        _ => bail!("expected welcome"),
    }
}

/// One simulated agent: streams until `end`, returns ack latencies in microseconds.
async fn agent(
    args: Arc<RunArgs>,
    i: u64,
    token: Arc<Vec<u8>>,
    totals: Arc<Totals>,
    end: Instant,
) -> Result<Vec<u32>> {
    let mut conn = tokio::time::timeout(limits::HANDSHAKE_TIMEOUT * 2, connect(&args, i, &token))
        .await
        .map_err(|_| anyhow!("no welcome within {:?}", limits::HANDSHAKE_TIMEOUT * 2))??;
    totals.connected.fetch_add(1, Ordering::Relaxed);
    let mut rng = fastrand::Rng::with_seed(i);
    let mut seq = 0u64;
    let mut acked = 0u64;
    // (last seq of the frame, when it was sent), oldest first.
    let mut in_flight: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Stagger the agents over one interval, as a real fleet is.
    tokio::time::sleep(args.interval.mul_f64(rng.f64())).await;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let can_send = if args.flood {
            in_flight.len() < args.window
        } else {
            false
        };
        if can_send {
            let frame = next_frame(&args, i, &mut seq, &mut rng)?;
            conn.feed(frame).await?;
            in_flight.push_back((seq, Instant::now()));
            totals
                .samples_sent
                .fetch_add(args.batch as u64, Ordering::Relaxed);
            if in_flight.len() < args.window {
                continue;
            }
            SinkExt::<Bytes>::flush(&mut conn).await?;
        }
        tokio::select! {
            _ = tick.tick(), if !args.flood => {
                let frame = next_frame(&args, i, &mut seq, &mut rng)?;
                conn.send(frame).await?;
                in_flight.push_back((seq, Instant::now()));
                totals.samples_sent.fetch_add(args.batch as u64, Ordering::Relaxed);
            }
            msg = conn.next() => {
                let body = msg.ok_or_else(|| anyhow!("master closed the connection"))??;
                match decode_body::<MasterMessage>(&body)? {
                    MasterMessage::Ack(a) => {
                        // The null sink acks each frame with u64::MAX; a master acks by seq.
                        let upto = if a.seq == u64::MAX { in_flight.front().map_or(acked, |f| f.0) } else { a.seq };
                        while let Some(&(s, t)) = in_flight.front() {
                            if s > upto { break; }
                            latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            in_flight.pop_front();
                        }
                        if upto > acked {
                            totals.samples_acked.fetch_add(upto - acked, Ordering::Relaxed);
                            acked = upto;
                        }
                    }
                    MasterMessage::Refused(r) => bail!("refused: {} {}", r.code, r.reason),
                    _ => bail!("unexpected message after welcome"),
                }
            }
            _ = tokio::time::sleep_until(end.into()) => break,
        }
    }
    let _ = conn
        .send(encode(&AgentMessage::Goodbye(Goodbye {
            last_seq: seq,
            reason: "loadgen done".into(),
        }))?)
        .await;
    Ok(latencies)
}

fn next_frame(args: &RunArgs, i: u64, seq: &mut u64, rng: &mut fastrand::Rng) -> Result<Bytes> {
    let mut sample = |seq: u64| {
        let mut s = sample(i, seq, rng);
        if let Some(text) = &args.host_text {
            s.filesystems[0].mount.clone_from(text);
        }
        s
    };
    if args.batch <= 1 {
        *seq += 1;
        return encode(&AgentMessage::Sample(sample(*seq)));
    }
    let samples = (0..args.batch.min(limits::MAX_BATCH_SAMPLES))
        .map(|_| {
            *seq += 1;
            sample(*seq)
        })
        .collect();
    encode(&AgentMessage::Batch(Batch { samples }))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// USER_HZ: 100 on every Linux architecture Sentinel targets.
fn clock_ticks() -> f64 {
    100.0
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[idx]) / 1000.0
}

async fn run(args: RunArgs) -> Result<()> {
    for n in (0..args.agents as u64).map(|i| args.id_base + i) {
        sentinel_protocol::labels::validate(&sim_labels(&args, n))
            .map_err(|e| anyhow!("simulated host {n}: {e}"))?;
    }
    let token = match &args.token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("token file {}", p.display()))?
            .trim_end()
            .as_bytes()
            .to_vec(),
        None => Vec::new(),
    };
    let (args, token, totals) = (Arc::new(args), Arc::new(token), Arc::new(Totals::default()));
    // Connect gradually (a fleet does not reconnect in one instant) and give everyone time.
    let ramp = Duration::from_millis((args.agents as u64).min(10_000) / 2);
    let start = Instant::now();
    let end = start + ramp + args.interval + args.duration;
    // The measurement window is the last `duration`: every agent connected and streaming.
    let window = {
        let (totals, pid, at) = (totals.clone(), args.watch_pid, start + ramp + args.interval);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            (
                totals.samples_acked.load(Ordering::Relaxed),
                pid.and_then(cpu_ticks),
                Instant::now(),
            )
        })
    };
    let mut tasks = Vec::with_capacity(args.agents);
    for i in 0..args.agents as u64 {
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (a, t, tot) = (args.clone(), token.clone(), totals.clone());
        tasks.push(tokio::spawn(async move {
            // A simulated agent stuck in I/O past the end counts as failed, not as a hang.
            let r = match tokio::time::timeout_at(
                (end + Duration::from_secs(10)).into(),
                agent(a, i, t, tot.clone(), end),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(anyhow!("still running 10 s after the end (stuck in I/O)")),
            };
            if r.is_err() {
                tot.failed.fetch_add(1, Ordering::Relaxed);
            }
            r
        }));
    }
    let mut latencies = Vec::new();
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok(l) => latencies.extend(l),
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (acked_at_window, ticks_at_window, window_start) = window.await?;
    let window_s = window_start.elapsed().as_secs_f64();
    let watched_cpu = match (ticks_at_window, args.watch_pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / clock_ticks() / window_s * 100.0),
        _ => None,
    };
    latencies.sort_unstable();
    let acked = totals.samples_acked.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "agents": args.agents,
        "connected": totals.connected.load(Ordering::Relaxed),
        "failed": totals.failed.load(Ordering::Relaxed),
        "first_error": first_error,
        "samples_sent": totals.samples_sent.load(Ordering::Relaxed),
        "samples_acked": acked,
        "seconds": elapsed,
        "window_seconds": window_s,
        "acked_per_second": (acked - acked_at_window) as f64 / window_s.max(0.001),
        "watched_pid_cpu_percent": watched_cpu,
        "ack_latency_ms_p50": percentile(&latencies, 0.50),
        "ack_latency_ms_p99": percentile(&latencies, 0.99),
        "ack_latency_ms_max": percentile(&latencies, 1.0),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn sink(listen: SocketAddr, dump: bool) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("null sink listening on {}", listener.local_addr()?);
    let mut ack = Vec::new();
    encode_frame(&MasterMessage::Ack(Ack { seq: u64::MAX }), &mut ack)?;
    let ack = Bytes::from(ack).slice(PREFIX_BYTES..);
    loop {
        let (stream, _) = listener.accept().await?;
        let ack = ack.clone();
        tokio::spawn(async move {
            let mut conn = Framed::new(stream, codec());
            let challenge = MasterMessage::Challenge(Challenge {
                version: PROTOCOL_VERSION,
                nonce: vec![0; 32],
            });
            let mut buf = Vec::new();
            encode_frame(&challenge, &mut buf).ok()?;
            conn.send(Bytes::from(buf).slice(PREFIX_BYTES..))
                .await
                .ok()?;
            conn.next().await?.ok()?; // hello: not checked, this is a null sink
            let mut welcome = Vec::new();
            encode_frame(
                &MasterMessage::Welcome(Welcome {
                    last_seq: 0,
                    clock_ms: unix_ms(),
                }),
                &mut welcome,
            )
            .ok()?;
            conn.send(Bytes::from(welcome).slice(PREFIX_BYTES..))
                .await
                .ok()?;
            // Like the master, answer every frame already read with one write: one ack per
            // frame (this sink does not decode, so it cannot ack cumulatively), one flush.
            while let Some(Ok(mut frame)) = conn.next().await {
                loop {
                    if dump {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        out.write_all(&(frame.len() as u32).to_be_bytes()).ok()?;
                        out.write_all(&frame).ok()?;
                        out.flush().ok()?;
                    }
                    conn.feed(ack.clone()).await.ok()?;
                    match futures_util::FutureExt::now_or_never(conn.next()) {
                        Some(Some(Ok(next))) => frame = next,
                        Some(Some(Err(_))) | Some(None) => {
                            SinkExt::<Bytes>::flush(&mut conn).await.ok()?;
                            return Some(());
                        }
                        None => break,
                    }
                }
                SinkExt::<Bytes>::flush(&mut conn).await.ok()?;
            }
            Some(())
        });
    }
}

/// One HTTP/1.0 GET; returns (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut raw = Vec::new();
    let (status, body_start) = http_get_into(addr, path, &mut raw).await?;
    raw.drain(..body_start);
    Ok((status, raw))
}

/// One HTTP/1.0 GET, the whole response read into `raw` (cleared first; a buffer reused
/// across requests spares the client a multi-MB allocation per request, which would otherwise
/// be counted as server latency). Returns the status and where the body starts in `raw`.
async fn http_get_into(addr: SocketAddr, path: &str, raw: &mut Vec<u8>) -> Result<(u16, usize)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.clear();
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    s.read_to_end(raw).await?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line"))?;
    Ok((status, split + 4))
}

fn latency_report(mut ms: Vec<f64>, extra: serde_json::Value, json: bool) -> Result<()> {
    ms.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        if ms.is_empty() {
            0.0
        } else {
            ms[((ms.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mut report = serde_json::json!({
        "count": ms.len(), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0), "min_ms": pick(0.0),
    });
    if let (Some(r), serde_json::Value::Object(e)) = (report.as_object_mut(), extra) {
        r.extend(e);
    }
    println!(
        "{}",
        if json {
            report.to_string()
        } else {
            serde_json::to_string_pretty(&report)?
        }
    );
    Ok(())
}

async fn probe(
    http: SocketAddr,
    path: String,
    requests: usize,
    every: Option<Duration>,
    json: bool,
) -> Result<()> {
    let mut ms = Vec::with_capacity(requests);
    let mut bytes = 0;
    let mut raw = Vec::new();
    let mut tick = every.map(tokio::time::interval);
    for _ in 0..requests {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        // From connect to the last byte of the body, as curl's time_total.
        let t = Instant::now();
        let (status, body_start) = http_get_into(http, &path, &mut raw).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            bail!("GET {path}: status {status}");
        }
        bytes = raw.len() - body_start;
    }
    latency_report(
        ms,
        serde_json::json!({ "path": path, "body_bytes": bytes, "every_ms": every.map(|d| d.as_millis()) }),
        json,
    )
}

async fn freshness(
    master: SocketAddr,
    http: SocketAddr,
    token_file: Option<std::path::PathBuf>,
    interval: Duration,
    samples: usize,
    json: bool,
) -> Result<()> {
    let args = probe_args(master, token_file, interval, 0xF7E5);
    let token = read_token(&args.token_file)?;
    let mut conn = connect(&args, 0, &token).await?;
    let id = sim_agent_id(args.id_base);
    let path = format!("/api/v1/hosts/{id}");
    let mut rng = fastrand::Rng::with_seed(1);
    let mut ms = Vec::with_capacity(samples);
    let mut tick = tokio::time::interval(interval);
    for seq in 1..=samples as u64 {
        tick.tick().await;
        let sent = Instant::now();
        conn.send(encode(&AgentMessage::Sample(sample(0, seq, &mut rng)))?)
            .await?;
        loop {
            let (status, body) = http_get(http, &path).await?;
            let seen = status == 200
                && serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["last_seq"].as_u64())
                    .is_some_and(|s| s >= seq);
            if seen {
                break;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                bail!("sample {seq} not visible over HTTP after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        // Drain acks so the socket buffer never fills.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::ZERO, conn.next()).await {}
    }
    latency_report(
        ms,
        serde_json::json!({ "what": "sample timestamp -> visible over HTTP" }),
        json,
    )
}

/// The agent id of simulated agent `n`: a fixed prefix keeps them apart from real agents.
fn sim_agent_id(n: u64) -> String {
    format!("{:032x}", (0x5e47_0000u128 << 64) | u128::from(n))
}

/// The probe agent's settings, shared by `freshness` and `sse-fanout`.
fn probe_args(
    master: SocketAddr,
    token_file: Option<std::path::PathBuf>,
    interval: Duration,
    id_base: u64,
) -> RunArgs {
    RunArgs {
        master,
        agents: 1,
        interval,
        duration: Duration::ZERO,
        token_file,
        flood: false,
        window: 1,
        batch: 1,
        id_base,
        watch_pid: None,
        json: false,
        host_text: None,
        labels: Vec::new(),
        label_cycles: Vec::new(),
        label_indexes: Vec::new(),
    }
}

fn read_token(path: &Option<std::path::PathBuf>) -> Result<Vec<u8>> {
    Ok(match path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("token file {}", p.display()))?
            .trim_end()
            .as_bytes()
            .to_vec(),
        None => Vec::new(),
    })
}

/// What the SSE readers compare against: the probe's latest seq and when it was sent.
#[derive(Default)]
struct Probe {
    seq: AtomicU64,
    /// Microseconds since `t0` when `seq` was sent.
    sent_us: AtomicU64,
}

async fn sse_reader(
    http: SocketAddr,
    id: String,
    probe: Arc<Probe>,
    t0: Instant,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Vec<f64>> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = TcpStream::connect(http).await?;
    s.write_all(
        format!("GET /api/v1/events HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut lines = BufReader::new(s).lines();
    let (mut seen, mut out) = (0u64, Vec::new());
    while !done.load(Ordering::Relaxed) {
        let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), lines.next_line())
            .await
            .unwrap_or(Ok(None))
        else {
            continue;
        };
        let pending = probe.seq.load(Ordering::Acquire);
        if pending > seen && line.starts_with("data:") && line.contains(&id) {
            let now = t0.elapsed().as_micros() as u64;
            out.push((now.saturating_sub(probe.sent_us.load(Ordering::Acquire))) as f64 / 1000.0);
            seen = pending;
        }
    }
    Ok(out)
}

async fn sse_fanout(
    master: SocketAddr,
    http: SocketAddr,
    token_file: Option<std::path::PathBuf>,
    clients: usize,
    interval: Duration,
    samples: usize,
    json: bool,
) -> Result<()> {
    let args = probe_args(master, token_file, interval, 0xFA40);
    let token = read_token(&args.token_file)?;
    let mut conn = connect(&args, 0, &token).await?;
    let id = sim_agent_id(args.id_base);
    let (probe, t0, done) = (
        Arc::new(Probe::default()),
        Instant::now(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let readers: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(sse_reader(
                http,
                id.clone(),
                probe.clone(),
                t0,
                done.clone(),
            ))
        })
        .collect();
    // Every reader has its snapshot before the first measured sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut rng = fastrand::Rng::with_seed(2);
    let mut tick = tokio::time::interval(interval);
    for seq in 1..=samples as u64 {
        tick.tick().await;
        probe
            .sent_us
            .store(t0.elapsed().as_micros() as u64, Ordering::Release);
        probe.seq.store(seq, Ordering::Release);
        conn.send(encode(&AgentMessage::Sample(sample(0, seq, &mut rng)))?)
            .await?;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::ZERO, conn.next()).await {}
    }
    tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
    done.store(true, Ordering::Relaxed);
    let mut ms = Vec::new();
    for r in readers {
        ms.extend(r.await??);
    }
    let expected = clients * samples;
    latency_report(
        ms,
        serde_json::json!({ "what": "sample sent -> SSE event at each client", "clients": clients, "expected": expected }),
        json,
    )
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Run(args) => rt.block_on(run(args)),
        Cmd::Sink { listen, dump } => rt.block_on(sink(listen, dump)),
        Cmd::Probe {
            http,
            path,
            requests,
            every,
            json,
        } => rt.block_on(probe(http, path, requests, every, json)),
        Cmd::Freshness {
            master,
            http,
            token_file,
            interval,
            samples,
            json,
        } => rt.block_on(freshness(master, http, token_file, interval, samples, json)),
        Cmd::SseFanout {
            master,
            http,
            token_file,
            clients,
            interval,
            samples,
            json,
        } => rt.block_on(sse_fanout(
            master, http, token_file, clients, interval, samples, json,
        )),
    }
}
