#!/usr/bin/env bash
# Sentinel against a real Prometheus (Debian's `prometheus` package, which also gives
# `promtool`): the #[ignore]d tests of tests/tests/prometheus.rs.
#   - promtool check metrics on /metrics; a Prometheus scraping the master answers PromQL
#     with every host's CPU and sentinel_host_up (~10 s)
#   - remote_write across a 20 s master outage in a 60 s run: every sample in Prometheus (~65 s)
#   - hosts labelled by agent.toml, --label and [[host_labels]] (hostile values included):
#     promtool-valid /metrics, PromQL by label on scraped and remote-written series, a
#     relabelled host on new series (~10 s)
# Installs prometheus if missing; every process is started on 127.0.0.1 and stopped by PID.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
fi
cd "$root"
cargo build -q --workspace --bins
exec cargo test -q -p sentinel-tests --test prometheus -- --ignored --test-threads 1 --nocapture "$@"
