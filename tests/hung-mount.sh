#!/usr/bin/env bash
# A dead mount must not stop the agent: samples every interval, the goodbye on SIGTERM.
#
#   sudo tests/hung-mount.sh [AGENT_BINARY]      (needs root, /dev/fuse, unshare, python3)
#
# In a private mount namespace (nothing outside it sees the mount) a FUSE filesystem is
# mounted whose daemon never answers, not even the kernel's INIT: every statvfs on it blocks,
# as on a dead NFS server. The agent streams to `sentinel-loadgen sink` for 9 s and gets
# SIGTERM. Passes if it sent >= 8 samples, logged the hung statvfs and said goodbye within
# 2 s. (The agent before 2026-11-26 sent no sample at all here: the whole sample hung.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
agent=${1:-$root/target/x86_64-unknown-linux-musl/release/sentinel-agent}
sink=$root/target/release/sentinel-loadgen
[[ $(id -u) == 0 && -c /dev/fuse ]] || { echo "skip: needs root and /dev/fuse"; exit 0; }
[[ -x $agent && -x $sink ]] || { echo "build first: $agent, $sink"; exit 1; }
if [[ -z ${HUNG_MOUNT_INSIDE:-} ]]; then
  exec env HUNG_MOUNT_INSIDE=1 unshare -m --propagation private "$0" "$agent"
fi
w=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; umount -l "$w/mnt" 2>/dev/null; rm -rf "$w"' EXIT
mkdir -p "$w/mnt" "$w/state"; : > "$w/empty.toml"
python3 - "$w/mnt" <<'PY' &
import ctypes, os, sys, time
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
if libc.mount(b"hungfs", sys.argv[1].encode(), b"fuse.hungfs", 0, opts) != 0:
    sys.exit("mount failed: " + os.strerror(ctypes.get_errno()))
time.sleep(3600)
PY
for _ in $(seq 50); do grep -q hungfs /proc/self/mounts && break; sleep 0.1; done
grep -q hungfs /proc/self/mounts || { echo "FAIL: no hung mount"; exit 1; }
# Port 0: the sink prints the address it bound ("null sink listening on ADDR").
"$sink" sink --listen 127.0.0.1:0 --dump > "$w/wire.bin" 2> "$w/sink.log" &
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/^null sink listening on \(.*\)$/\1/p' "$w/sink.log")
  [[ -n $addr ]] && break; sleep 0.05
done
[[ -n $addr ]] || { echo "FAIL: the sink did not start"; cat "$w/sink.log"; exit 1; }
"$agent" --config "$w/empty.toml" --master "$addr" --state-dir "$w/state" --interval 1s 2> "$w/agent.log" &
a=$!
sleep 9
t0=$(date +%s%N); kill -TERM $a; wait $a; t1=$(date +%s%N)
cat "$w/agent.log"
seq=$(sed -n 's/.*Said goodbye.*last_seq=\([0-9]*\).*/\1/p' "$w/agent.log")
ms=$(((t1 - t0) / 1000000))
echo "samples=${seq:-none} exit_after_ms=$ms"
[[ -n $seq && $seq -ge 8 && $ms -lt 2000 ]] && grep -q "statvfs has not returned" "$w/agent.log" \
  && echo PASS || { echo FAIL; exit 1; }
