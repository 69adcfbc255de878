#!/usr/bin/env bash
# Agent footprint, side by side with node_exporter (minimal collectors, scraped every second)
# and collectd (same metric families -> UDP), R repetitions of one run each, medians.
#
#   bench/agent-footprint.sh [D=60] [R=3]
#
# Measures the static musl sentinel-agent (the binary `cargo xtask dist` packages) at a
# 1 s cadence, streaming to `sentinel-loadgen sink --dump`, which completes the real handshake,
# acks every frame and copies every received frame to stdout, so the bytes counted are exactly
# the bytes the agent put on the wire (frames with their length prefix, after the handshake).
# The measuring is done by bench/anchor-agents.sh (the team's shared anchor script, copied
# here unchanged), which reports CPU % of one core over the window, peak RSS and binary size.
# Needs: apt-get install prometheus-node-exporter collectd-core netcat-openbsd curl
set -euo pipefail
D=${1:-60}
R=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
agent=$root/target/x86_64-unknown-linux-musl/release/sentinel-agent
cargo build --quiet --release --target x86_64-unknown-linux-musl -p sentinel-agent --manifest-path "$root/Cargo.toml"
cargo build --quiet --release -p sentinel-loadgen --manifest-path "$root/Cargo.toml"
out=${OUT:-$root/target/bench/footprint-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out/state"
: > "$out/empty.toml"
port=${PORT:-17410}
for ((r = 1; r <= R; r++)); do
  AGENTS="node-min collectd agent" AGENT_NAME=sentinel-agent \
  AGENT_SINK="$root/target/release/sentinel-loadgen sink --listen 127.0.0.1:$port --dump" \
  AGENT_CMD="$agent --config $out/empty.toml --master 127.0.0.1:$port --state-dir $out/state --interval 1s" \
  OUT_DIR=$out/run$r bash "$root/bench/anchor-agents.sh" "$D"
done
python3 - "$out" "$R" <<'PY'
import csv, statistics, sys, glob, datetime
out, R = sys.argv[1], int(sys.argv[2])
rows = {}
for f in sorted(glob.glob(f"{out}/run*/results.tsv")):
    for row in csv.DictReader(open(f), delimiter="\t"):
        if row["agent"].startswith("+"):
            continue
        rows.setdefault(row["agent"], []).append(row)
def med(vals):
    vals = [float(v) for v in vals]
    return statistics.median(vals), min(vals), max(vals)
print(f"== agent footprint, {R} runs, medians (min..max), {datetime.date.today()} ==")
print("| agent | CPU % of one core | peak RSS (MB) | binary (MB) | bytes per sample |")
print("| --- | --- | --- | --- | --- |")
for name, rs in rows.items():
    cpu = med(r["cpu_pct"] for r in rs)
    rss = med(float(r["rss_peak_kb"]) / 1000 for r in rs)
    binb = float(rs[0]["bin_bytes"]) / 1e6 if rs[0]["bin_bytes"] not in ("", "-") else float("nan")
    bps = [r["bytes_per_sample"].split("/")[0] for r in rs]
    bpsm = med(bps) if all(b not in ("", "-") for b in bps) else (float("nan"),) * 3
    print(f"| {name} | {cpu[0]:.3f} ({cpu[1]:.3f}..{cpu[2]:.3f}) | {rss[0]:.1f} ({rss[1]:.1f}..{rss[2]:.1f}) | {binb:.2f} | {bpsm[0]:.0f} ({bpsm[1]:.0f}..{bpsm[2]:.0f}) |")
PY
