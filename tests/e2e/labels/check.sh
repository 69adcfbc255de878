#!/bin/bash
# tests/e2e/labels/check.sh: the sentinel_agent role's label check, case by case
# (inventory.yml: one fake host per case, each with the outcome it must have). Each case is
# its own ansible-playbook run (the check has any_errors_fatal: one failing host would stop
# the others), 4 at a time, all on the controller: no host is touched. Prints one line per
# case; exit 0 = every case had its expected outcome. Needs ansible-playbook on PATH.
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ANSIBLE_ROLES_PATH=$DIR/../../../deploy/ansible/roles ANSIBLE_NOCOLOR=1
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
cases=$(python3 - "$DIR/inventory.yml" <<'PY'
import re, sys
# The case names: the keys 8 spaces deep under `hosts:` (no YAML module needed).
print("\n".join(m.group(1) for m in re.finditer(r"^        ([a-z0-9_]+):", open(sys.argv[1]).read(), re.M)))
PY
)
run_case() {
    if ansible-playbook -i "$DIR/inventory.yml" "$DIR/labels_check.yml" --limit "$1" > "$OUT/$1.log" 2>&1; then
        echo "    ok      $1: $(grep -o "\"msg\": \"$1: .*\"" "$OUT/$1.log" | head -1)"
    else
        echo "    WRONG   $1: $(grep -o "\"msg\": \"$1: got .*" "$OUT/$1.log" | head -1)"
        return 1
    fi
}
export -f run_case
export DIR OUT
n=$(wc -l <<< "$cases")
printf '%s\n' "$cases" | xargs -P 4 -I{} bash -c 'run_case {}' > "$OUT/summary.txt" 2>&1 && rc=0 || rc=1
sort -k2 "$OUT/summary.txt"
echo "    $(grep -c '^    ok' "$OUT/summary.txt") of $n cases as expected"
exit $rc
