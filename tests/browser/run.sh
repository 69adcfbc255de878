#!/usr/bin/env bash
# Browser tests of the Sentinel dashboard: headless Debian Chromium driven by playwright-core,
# against real sentinel-master / sentinel-agent processes (target/debug) on 127.0.0.1.
#
#   tests/browser/run.sh            the dashboard tests (~15 s + ~15 s + ~40 s after the build):
#                                   dashboard.test.js, then operator.test.js (viewer and
#                                   operator, host removal, pinned/unpinned/cloned identity),
#                                   then labels.test.js (filters, groups, collapse, URL state,
#                                   hostile label values; 255 hosts)
#   tests/browser/run.sh perf       the 5,000-host measurement (~1.5 min + a release build),
#                                   then the 10,000-host one (perf10k.test.js: bytes/s and
#                                   render times of the filtered, paged fleet view; ~3 min)
#   tests/browser/run.sh perf10k    the 10,000-host measurement only
#   tests/browser/run.sh all        all of them
#
# Installs what is missing (Debian chromium, the npm packages of package-lock.json) and
# reuses what is present. UPDATE_DOCS_IMG=1 copies the screenshots to docs/img/.
# Artifacts (screenshots, perf JSON) land in tests/browser/artifacts/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
what="${1:-dashboard}"

if [ ! -x /usr/bin/chromium ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
fi

# The dashboard test runs the debug binaries; the 5,000-host measurement runs the binaries
# that ship (one release build of master and loadgen, reused when up to date).
if [ "$what" != perf ] && [ "$what" != perf10k ]; then
    (cd "$root" && cargo build -q -p sentinel-master -p sentinel-agent -p sentinel-loadgen)
fi
if [ "$what" != dashboard ]; then
    (cd "$root" && cargo build -q --release -p sentinel-master -p sentinel-loadgen)
fi

cd "$here"
case "$what" in
    dashboard) node dashboard.test.js && node operator.test.js && node labels.test.js ;;
    perf) SENTINEL_PROFILE=release node perf5000.test.js && SENTINEL_PROFILE=release node perf10k.test.js ;;
    perf10k) SENTINEL_PROFILE=release node perf10k.test.js ;;
    all) node dashboard.test.js && node operator.test.js && node labels.test.js &&
        SENTINEL_PROFILE=release node perf5000.test.js && SENTINEL_PROFILE=release node perf10k.test.js ;;
    *) echo "usage: $0 [dashboard|perf|perf10k|all]" >&2; exit 2 ;;
esac
