#!/usr/bin/env python3
"""Master-side benchmarks: ingest vs. a null sink, read side under load, freshness, scaling,
filtered event streams.

    bench/master_bench.py [ingest|read|scaling|filtered|all] [--runs R] [--seconds D] [--labels]

--labels gives the read side's 5,000 simulated hosts three labels each (role cycling
web/db/cache, dc cycling eu1/us1/ap1, shard = host number / 100), as a labelled fleet has, so
/api/v1/hosts and /metrics render them; without it the hosts have none, as in 0.1.0.

Everything runs on this machine over loopback: the static musl sentinel-master (the
deployable, built here for x86_64-unknown-linux-musl) and the release sentinel-loadgen
(simulated agents speaking the real protocol). Each figure is the median over R runs, with
min..max, and every comparison (master vs. null sink) is measured in the same run, back to
back, because this machine is shared and noisy. Prints Markdown tables for docs/BENCHMARKS.md
and writes the raw JSON lines next to them under target/bench/.
"""

import argparse
import datetime
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/sentinel-master")
LOADGEN = os.path.join(ROOT, "target/release/sentinel-loadgen")
OUT = os.path.join(ROOT, "target/bench", "master-" + time.strftime("%Y%m%d-%H%M%S"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, timeout, fn):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def http_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
                out.append(int(p))
    return out


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Master:
    """A sentinel-master supervisor with its own ports and segment; stopped by PID."""

    def __init__(self, capacity):
        os.makedirs(OUT, exist_ok=True)
        self.token = os.path.join(OUT, "token")
        open(self.token, "w").write("bench-token\n")
        conf = os.path.join(OUT, "master.toml")
        open(conf, "w").write("")
        self.listen, self.http = free_port(), free_port()
        self.shm = f"sentinel-bench-{os.getpid()}-{self.listen}"
        self.log = open(os.path.join(OUT, f"master-{self.listen}.log"), "w")
        self.proc = subprocess.Popen(
            [MASTER, "--config", conf, "--listen", f"127.0.0.1:{self.listen}", "--http", f"127.0.0.1:{self.http}",
             "--token-file", self.token, "--shm-name", self.shm, "--capacity", str(capacity),
             "--state-dir", os.path.join(OUT, "state"), "--snapshot-interval", "0s",
             "--max-connections", str(max(16384, capacity + 100)),
             # loadgen's thousands of agents all connect from 127.0.0.1
             "--new-hosts-per-minute", "0"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        h = wait_for("master healthz", 15, lambda: http_json(self.http, "/healthz"))
        self.collector = h["collector_pid"]

    def rss_kb(self):
        return rss_kb(self.proc.pid) + sum(rss_kb(c) for c in children(self.proc.pid))

    def shm_kb(self):
        # Pages actually touched in the segment (tmpfs allocates lazily).
        return int(subprocess.run(["du", "-k", f"/dev/shm/{self.shm}"], capture_output=True, text=True).stdout.split()[0])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.log.close()


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadgen(*args):
    r = subprocess.run([LOADGEN, *map(str, args), "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"loadgen {' '.join(map(str, args))} failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def record(name, value):
    with open(os.path.join(OUT, name + ".jsonl"), "a") as f:
        f.write(json.dumps(value) + "\n")
    return value


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{m:,.1f} ({min(values):,.1f}..{max(values):,.1f})"


def ingest(runs, seconds):
    rows = []
    for n in (1000, 10000):
        m_rates, s_rates, m_cpu, ratios, lat99 = [], [], [], [], []
        for _ in range(runs):
            master = Master(capacity=n + 64)
            r = record(f"ingest-master-{n}", loadgen("run", "--master", f"127.0.0.1:{master.listen}", "--agents", n,
                                                     "--flood", "--window", 16, "--duration", f"{seconds}s",
                                                     "--token-file", master.token, "--watch-pid", master.collector))
            master.stop()
            sink_port = free_port()
            sink = subprocess.Popen([LOADGEN, "sink", "--listen", f"127.0.0.1:{sink_port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for("sink", 10, lambda: socket.create_connection(("127.0.0.1", sink_port), timeout=1))
            s = record(f"ingest-sink-{n}", loadgen("run", "--master", f"127.0.0.1:{sink_port}", "--agents", n,
                                                   "--flood", "--window", 16, "--duration", f"{seconds}s",
                                                   "--watch-pid", sink.pid))
            sink.send_signal(signal.SIGTERM)
            sink.wait()
            if r["failed"] or s["failed"]:
                print(f"warning: failed agents: master {r['failed']} ({r['first_error']}), sink {s['failed']}", file=sys.stderr)
            m_rates.append(r["acked_per_second"])
            s_rates.append(s["acked_per_second"])
            ratios.append(100 * r["acked_per_second"] / s["acked_per_second"])
            m_cpu.append(r["watched_pid_cpu_percent"])
            lat99.append(r["ack_latency_ms_p99"])
        rows.append(f"| {n:,} agents, flood | {med(m_rates)} | {med(s_rates)} | {med(ratios)} % | {med(m_cpu)} % | {med(lat99)} |")
    # 10,000 agents at 1 Hz: the collector's CPU.
    cpu, rate = [], []
    for _ in range(runs):
        master = Master(capacity=10064)
        r = record("ingest-1hz-10000", loadgen("run", "--master", f"127.0.0.1:{master.listen}", "--agents", 10000,
                                               "--interval", "1s", "--duration", f"{seconds}s",
                                               "--token-file", master.token, "--watch-pid", master.collector))
        master.stop()
        cpu.append(r["watched_pid_cpu_percent"])
        rate.append(r["acked_per_second"])
    print(f"\n### Collector ingest ({datetime.date.today()}, {runs} runs, {seconds} s windows, medians (min..max))\n")
    print("| load | master samples/s | null sink samples/s | master / sink | collector CPU (% of one core) | ack p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"| 10,000 agents at 1 Hz | {med(rate)} | | | {med(cpu)} % | |")


READ_LABELS = []


def read_side(runs, seconds):
    hosts_p50, hosts_p99, metrics_p50, metrics_p99, fresh_p50, fresh_p99, ingest_rate = ([] for _ in range(7))
    sse_p50, sse_p99, sse_got = [], [], []
    polled_p50, polled_p99, polled_cpu = [], [], []
    for _ in range(runs):
        master = Master(capacity=5200)
        # 5,000 agents at 500 ms: 10,000 samples/s of ingest in the background.
        bg = subprocess.Popen([LOADGEN, "run", "--master", f"127.0.0.1:{master.listen}", "--agents", "5000",
                               "--interval", "500ms", "--duration", f"{seconds + 150}s", "--token-file", master.token,
                               "--json", *READ_LABELS], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_for("5,000 hosts in the table", 60, lambda: len(http_json(master.http, "/api/v1/hosts")["hosts"]) >= 5000)
        # Steady state: every host's sparklines full (60 points, 30 s at 500 ms), so the body
        # is as large as a fleet's that has been up a minute.
        wait_for("full sparklines", 60, lambda: min(len(h["spark"]["cpu"]) for h in http_json(master.http, "/api/v1/hosts")["hosts"]) >= 60)
        h = record("read-hosts", loadgen("probe", "--http", f"127.0.0.1:{master.http}", "--path", "/api/v1/hosts", "--requests", 100))
        # A poller (a dashboard's fallback, a script) asks every second: most hosts have changed
        # in between, and the cache is kept warm in the background (the http process's CPU).
        http_pid = http_json(master.http, "/healthz")["http_pid"]
        cpu0, t0 = cpu_seconds(http_pid), time.monotonic()
        hp = record("read-hosts-polled", loadgen("probe", "--http", f"127.0.0.1:{master.http}", "--path", "/api/v1/hosts",
                                                 "--requests", 60, "--every", "1s"))
        polled_cpu.append(100 * (cpu_seconds(http_pid) - cpu0) / (time.monotonic() - t0))
        m = record("read-metrics", loadgen("probe", "--http", f"127.0.0.1:{master.http}", "--path", "/metrics", "--requests", 30))
        f = record("freshness", loadgen("freshness", "--master", f"127.0.0.1:{master.listen}", "--http", f"127.0.0.1:{master.http}",
                                        "--token-file", master.token, "--interval", "500ms", "--samples", 40))
        e = record("sse", loadgen("sse-fanout", "--master", f"127.0.0.1:{master.listen}", "--http", f"127.0.0.1:{master.http}",
                                  "--token-file", master.token, "--clients", 100, "--interval", "1s", "--samples", 10))
        out, _ = bg.communicate()
        g = record("read-ingest", json.loads(out.strip().splitlines()[-1]))
        master.stop()
        hosts_p50.append(h["p50_ms"]); hosts_p99.append(h["p99_ms"])
        polled_p50.append(hp["p50_ms"]); polled_p99.append(hp["p99_ms"])
        metrics_p50.append(m["p50_ms"]); metrics_p99.append(m["p99_ms"])
        fresh_p50.append(f["p50_ms"]); fresh_p99.append(f["p99_ms"])
        ingest_rate.append(g["acked_per_second"])
        sse_p50.append(e["p50_ms"]); sse_p99.append(e["p99_ms"]); sse_got.append(100 * e["count"] / e["expected"])
    labelled = ", 3 labels per host" if READ_LABELS else ", hosts without labels"
    print(f"\n### Read side with 5,000 hosts under ~10,000 samples/s ingest ({datetime.date.today()}, {runs} runs{labelled}, medians (min..max))\n")
    print("| measure | p50 ms | p99 ms |")
    print("| --- | --- | --- |")
    print(f"| GET /api/v1/hosts (5,000 hosts), back to back | {med(hosts_p50)} | {med(hosts_p99)} |")
    print(f"| GET /api/v1/hosts (5,000 hosts), polled every 1 s | {med(polled_p50)} | {med(polled_p99)} |")
    print(f"| GET /metrics (5,000 hosts) | {med(metrics_p50)} | {med(metrics_p99)} |")
    print(f"| freshness: sample sent -> visible over HTTP | {med(fresh_p50)} | {med(fresh_p99)} |")
    print(f"| SSE fan-out: sample sent -> event at each of 100 clients | {med(sse_p50)} | {med(sse_p99)} |")
    print(f"\nSSE events delivered: {med(sse_got)} % of clients x samples.")
    print(f"\nhttp process CPU while polled every 1 s (requests and keeping the cache warm): {med(polled_cpu)} % of one core.")
    print(f"\nBackground ingest during the probes: {med(ingest_rate)} samples/s acked.")


def scaling(runs, seconds):
    print(f"\n### Scaling at 1 Hz ({datetime.date.today()}, {runs} runs, medians (min..max))\n")
    print("| agents | samples/s acked | ack p99 ms | /api/v1/hosts p99 ms | master RSS MB (3 processes) | RSS KB per host | segment touched MB | collector CPU % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in (100, 1000, 10000):
        rate, p99, hp99, rss, per_host, shm, cpu = ([] for _ in range(7))
        for _ in range(runs):
            master = Master(capacity=max(4096, n + 64))
            base_rss = master.rss_kb()
            bg = subprocess.Popen([LOADGEN, "run", "--master", f"127.0.0.1:{master.listen}", "--agents", str(n),
                                   "--interval", "1s", "--duration", f"{seconds}s", "--token-file", master.token,
                                   "--watch-pid", str(master.collector), "--json"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            wait_for(f"{n} hosts", 60, lambda: len(http_json(master.http, "/api/v1/hosts")["hosts"]) >= n)
            h = loadgen("probe", "--http", f"127.0.0.1:{master.http}", "--path", "/api/v1/hosts", "--requests", 30)
            out, _ = bg.communicate()
            g = record(f"scaling-{n}", json.loads(out.strip().splitlines()[-1]))
            r_kb = master.rss_kb()
            rss.append(r_kb / 1000)
            per_host.append((r_kb - base_rss) / n)
            shm.append(master.shm_kb() / 1000)
            master.stop()
            rate.append(g["acked_per_second"]); p99.append(g["ack_latency_ms_p99"]); hp99.append(h["p99_ms"])
            cpu.append(g["watched_pid_cpu_percent"])
        print(f"| {n:,} | {med(rate)} | {med(p99)} | {med(hp99)} | {med(rss)} | {med(per_host)} | {med(shm)} | {med(cpu)} |")


class EventClient(threading.Thread):
    """One /api/v1/events client on its own thread: counts the host rows it receives, checks
    that each host's sparkline points arrive without a gap (a row's `spark_add` holds the
    points numbered n-len..n; a later row starting past what was held means updates were
    lost), the delay from a sample's receive time (`last_seen_ms`) to the row's arrival, and
    the bytes received."""

    def __init__(self, port, query):
        super().__init__(daemon=True)
        self.port, self.query = port, query
        self.snapshot_ids = None
        self.updates = {}       # host id -> rows received after the snapshot
        self.held = {}          # host id -> highest point number held
        self.gaps = 0           # points skipped over, all hosts
        self.lags = []          # ms from last_seen_ms to arrival
        self.bytes = 0
        self.ended = False
        self.counting = False   # rows and bytes count only inside the window
        self.foreign = 0        # rows of hosts outside the snapshot (should stay 0)
        self.stop = threading.Event()

    def row(self, h, now_ms):
        hid = h["id"]
        sp = h.get("spark_add") or h.get("spark") or {}
        n, k = sp.get("n", 0), len(sp.get("cpu", []))
        held = self.held.get(hid)
        if held is not None and n - k > held:
            self.gaps += n - k - held
        self.held[hid] = max(n, held or 0)
        if self.counting:
            self.updates[hid] = self.updates.get(hid, 0) + 1
            self.lags.append(now_ms - h["last_seen_ms"])

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(f"GET /api/v1/events?{self.query} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
        buf = b""
        head = False
        while not self.stop.is_set():
            try:
                chunk = s.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            if self.counting:
                self.bytes += len(chunk)
            buf += chunk
            if not head:
                if b"\r\n\r\n" not in buf:
                    continue
                status, buf = buf.split(b"\r\n\r\n", 1)
                if b" 200 " not in status.split(b"\r\n")[0]:
                    raise SystemExit(f"events?{self.query}: {status!r}")
                head = True
            *blocks, buf = buf.split(b"\n\n")
            now_ms = time.time() * 1000
            for block in blocks:
                name, data = None, None
                for line in block.split(b"\n"):
                    if line.startswith(b"event: "):
                        name = line[7:].decode()
                    elif line.startswith(b"data: "):
                        data = line[6:]
                if name == "snapshot":
                    hosts = json.loads(data)["hosts"]
                    self.snapshot_ids = {h["id"] for h in hosts}
                    for h in hosts:
                        self.row(h, now_ms)
                elif name == "hosts":
                    for h in json.loads(data)["hosts"]:
                        if self.snapshot_ids is not None and h["id"] not in self.snapshot_ids:
                            self.foreign += 1
                        self.row(h, now_ms)
        self.ended = not self.stop.is_set()
        s.close()


def filtered(runs, seconds):
    """10,000 simulated hosts at 1 Hz in shards of 100 (`--label-index shard=100`): 100 event
    streams each filtered to one shard, and one paged stream (`ids` of 100 hosts + group_by);
    then GET /api/v1/hosts with and without a label filter at 5,000 hosts."""
    seconds = max(seconds, 30)
    complete, min_updates, gaps, lag99, per_client, paged, dropped, foreign, behind_all = ([] for _ in range(9))
    hosts_p99, label_p99, label_p50 = [], [], []
    for _ in range(runs):
        master = Master(capacity=10064)
        bg = subprocess.Popen([LOADGEN, "run", "--master", f"127.0.0.1:{master.listen}", "--agents", "10000",
                               "--interval", "1s", "--duration", f"{seconds + 120}s", "--token-file", master.token,
                               "--label-index", "shard=100", "--json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        wait_for("10,000 hosts in the table", 90,
                 lambda: int(urllib.request.urlopen(f"http://127.0.0.1:{master.http}/api/v1/hosts?limit=1", timeout=10)
                             .headers["X-Total-Count"]) >= 10000)
        page = http_json(master.http, "/api/v1/hosts?limit=100&offset=5000")["hosts"]
        ids = ",".join(h["id"] for h in page)
        clients = [EventClient(master.http, f"label=shard={n}") for n in range(100)]
        pager = EventClient(master.http, f"ids={ids}&group_by=shard")
        for c in clients + [pager]:
            c.start()
        wait_for("every stream's snapshot", 60, lambda: all(c.snapshot_ids is not None for c in clients + [pager]))
        time.sleep(2)  # rows already in flight at the snapshot settle
        for c in clients + [pager]:
            c.counting = True
        t0 = time.monotonic()
        time.sleep(seconds)
        window = time.monotonic() - t0
        for c in clients + [pager]:
            c.counting = False
        # Caught up: what each stream holds of every host against what the table holds,
        # after 2 s for the rows in flight (a stream is 200 ms + one sample behind at most).
        truth = {h["id"]: h["spark"]["n"] for h in json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{master.http}/api/v1/hosts", timeout=30))["hosts"]}
        time.sleep(2)
        for c in clients + [pager]:
            c.stop.set()
        behind = sum(1 for c in clients for h in c.snapshot_ids if c.held.get(h, 0) < truth.get(h, 0) - 1)
        shard_ok = all(len(c.snapshot_ids) == 100 for c in clients)
        counts = [c.updates.get(h, 0) for c in clients for h in c.snapshot_ids]
        lags = sorted(l for c in clients for l in c.lags)
        r = record("filtered-streams", {
            "window_s": window, "clients": len(clients), "hosts_per_client": [len(c.snapshot_ids) for c in clients],
            "min_updates_per_host": min(counts), "median_updates_per_host": statistics.median(counts),
            "gaps": sum(c.gaps for c in clients), "dropped_streams": sum(c.ended for c in clients + [pager]),
            "hosts_behind": behind, "loadavg": open("/proc/loadavg").read().split()[:3],
            "foreign_rows": sum(c.foreign for c in clients),
            "lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] if lags else None,
            "bytes_per_s_per_client": statistics.median(c.bytes / window for c in clients),
            "paged_bytes_per_s": pager.bytes / window, "paged_gaps": pager.gaps,
        })
        complete.append(100.0 if shard_ok and r["gaps"] == 0 and r["dropped_streams"] == 0
                        and behind == 0 else 0.0)
        behind_all.append(behind)
        min_updates.append(r["min_updates_per_host"] / window)
        gaps.append(r["gaps"])
        lag99.append(r["lag_p99_ms"])
        per_client.append(r["bytes_per_s_per_client"] / 1000)
        paged.append(r["paged_bytes_per_s"] / 1000)
        dropped.append(r["dropped_streams"])
        foreign.append(r["foreign_rows"])
        bg.kill()
        bg.wait()
        master.stop()
        # GET /api/v1/hosts with a label filter at 5,000 hosts under 10,000 samples/s (as in
        # the read-side table), against the unfiltered request in the same run.
        master = Master(capacity=5200)
        bg = subprocess.Popen([LOADGEN, "run", "--master", f"127.0.0.1:{master.listen}", "--agents", "5000",
                               "--interval", "500ms", "--duration", f"{seconds + 150}s", "--token-file", master.token,
                               "--label-index", "shard=100"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        wait_for("5,000 hosts in the table", 60, lambda: len(http_json(master.http, "/api/v1/hosts")["hosts"]) >= 5000)
        wait_for("full sparklines", 60, lambda: min(len(h["spark"]["cpu"]) for h in http_json(master.http, "/api/v1/hosts")["hosts"]) >= 60)
        h = record("filtered-hosts-unfiltered", loadgen("probe", "--http", f"127.0.0.1:{master.http}", "--path", "/api/v1/hosts", "--requests", 100))
        f = record("filtered-hosts-label", loadgen("probe", "--http", f"127.0.0.1:{master.http}", "--path",
                                                   "/api/v1/hosts?label=shard=7", "--requests", 100))
        bg.kill()
        bg.wait()
        master.stop()
        hosts_p99.append(h["p99_ms"]); label_p99.append(f["p99_ms"]); label_p50.append(f["p50_ms"])
    print(f"\n### Filtered event streams at 10,000 hosts, 1 Hz ({datetime.date.today()}, {runs} runs, {seconds} s windows, medians (min..max))\n")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| runs where every host of every filtered stream got every update (no gap, none dropped, none behind the table) | {med(complete)} % |")
    print(f"| hosts whose stream was behind the table at the end | {med(behind_all)} |")
    print(f"| fewest updates per host per second (of 10,000 hosts over 100 streams; bounded by the samples the loaded generator sent) | {med(min_updates)} |")
    print(f"| sparkline points lost (gaps), all streams | {med(gaps)} |")
    print(f"| streams dropped | {med(dropped)} |")
    print(f"| rows of another shard received | {med(foreign)} |")
    print(f"| sample received -> row at the client, p99 ms | {med(lag99)} |")
    print(f"| bytes/s per filtered stream (100 hosts), KB/s | {med(per_client)} |")
    print(f"| paged stream (ids of 100 hosts + group_by), KB/s | {med(paged)} |")
    print(f"| GET /api/v1/hosts?label=shard=7 (50 of 5,000 hosts), p50 / p99 ms | {med(label_p50)} / {med(label_p99)} |")
    print(f"| GET /api/v1/hosts (5,000 hosts) in the same runs, p99 ms | {med(hosts_p99)} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["ingest", "read", "scaling", "filtered", "all"], nargs="?", default="all")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--labels", action="store_true", help="the read side's hosts carry 3 labels each")
    a = p.parse_args()
    if a.labels:
        READ_LABELS.extend(["--label-cycle", "role=web,db,cache", "--label-cycle", "dc=eu1,us1,ap1",
                            "--label-index", "shard=100"])
    # The deployable master (static musl, as packaged) and the load generator.
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "x86_64-unknown-linux-musl", "-p", "sentinel-master"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "sentinel-loadgen"], cwd=ROOT, check=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; loadavg at start {open('/proc/loadavg').read().split()[:3]}")
    if a.what in ("ingest", "all"):
        ingest(a.runs, a.seconds)
    if a.what in ("read", "all"):
        read_side(a.runs, a.seconds)
    if a.what in ("scaling", "all"):
        scaling(a.runs, a.seconds)
    if a.what in ("filtered", "all"):
        filtered(a.runs, a.seconds)
    print(f"\nraw results: {OUT}")


if __name__ == "__main__":
    main()
