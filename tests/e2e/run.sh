#!/bin/bash
# tests/e2e/run.sh - Sentinel's fleet rollout, end to end, on booted systemd hosts.
#
# One command, as root:  bash tests/e2e/run.sh
#
# Boots a master host, three agent hosts and a spare host for the .rpm check: Debian
# bookworm containers with systemd as PID 1 (systemd-nspawn), each in its own network
# namespace on a private bridge 10.231.0.0/24. From a client namespace on that bridge it runs
# deploy/ansible/site.yml over SSH with the packages of `cargo xtask dist`, then checks the
# fleet through the master's HTTP API (issue 4's "Done means"). Everything is torn down on
# exit, failure included. Prints PASS/FAIL per check and exits non-zero if any failed.
# Not root, or a kernel without what it needs: prints "SKIPPED: <why>" and exits 0.
#
# Environment:
#   SENTINEL_E2E_CACHE   cache for the root filesystem and the Ansible venv
#                        (default /var/cache/sentinel-e2e)
#   SENTINEL_E2E_KEEP=1  keep the run's logs directory (target/e2e/run) on success too
#   SENTINEL_E2E_HOLD=S  before teardown, keep the fleet up for S seconds to look around
#   SENTINEL_E2E_REBUILD=1  run `cargo xtask dist` even if target/dist has the packages
#                        (by default they are reused: CI builds them just before)
#
# Traffic stays on the bridge inside namespaces created here: every client (ansible, ssh,
# the API checks) runs in the client namespace; nothing is sent from the root namespace.
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LIB=$REPO/tests/e2e/lib
CACHE=${SENTINEL_E2E_CACHE:-/var/cache/sentinel-e2e}
WORK=$REPO/target/e2e/run
NSDIR=$WORK/netns
T0=$(date +%s.%N)

# --- names and addresses ---------------------------------------------------------------------
PFX=se2e
SWITCH=$PFX-sw
CLIENT=$PFX-ctl
CLIENT_IP=10.231.0.2
MASTER=$PFX-master
AGENTS=("$PFX-web1" "$PFX-web2" "$PFX-db1")
RPMHOST=$PFX-rpm
HOSTS=("$MASTER" "${AGENTS[@]}" "$RPMHOST")
declare -A IP=(["$MASTER"]=10.231.0.10 ["$PFX-web1"]=10.231.0.11 ["$PFX-web2"]=10.231.0.12
               ["$PFX-db1"]=10.231.0.13 ["$RPMHOST"]=10.231.0.14)
API=http://${IP[$MASTER]}:7411
CG_NAME=sentinel-e2e

# Pinned controller tools (PyPI). ansible-core 2.19 is the newest that runs on Python 3.11.
PIP_PINS="ansible-core==2.19.14 ansible-lint==26.10.1"

log() { printf '[%6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
skip() { echo "SKIPPED: $*"; SKIPPING=1; exit 0; }
die() { log "FATAL: $*"; exit 1; }

# --- results ---------------------------------------------------------------------------------
RESULTS=()
FAILED=0
pass() { RESULTS+=("PASS  $1"); log "PASS  $1"; }
fail() { RESULTS+=("FAIL  $1"); log "FAIL  $1"; FAILED=$((FAILED + 1)); }
# check NAME CMD...: run CMD, record PASS/FAIL, never abort the run.
check() {
    local name=$1; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# --- preflight: skip cleanly where this cannot run -------------------------------------------
preflight() {
    [ "$(id -u)" = 0 ] || skip "needs root (network namespaces, overlayfs, systemd-nspawn)"
    command -v apt-get > /dev/null || skip "needs a Debian-family machine (apt-get) to install its tools"
    grep -qw overlay /proc/filesystems || modprobe overlay 2> /dev/null || true
    grep -qw overlay /proc/filesystems || skip "kernel has no overlayfs"
    [ -e /proc/self/ns/net ] && [ -e /proc/self/ns/pid ] || skip "kernel lacks network/PID namespaces"
    if [ -d /sys/fs/cgroup/unified ] && [ -d /sys/fs/cgroup/systemd ]; then
        CGROUPS=("/sys/fs/cgroup/systemd/$CG_NAME" "/sys/fs/cgroup/unified/$CG_NAME")
    elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        CGROUPS=("/sys/fs/cgroup/$CG_NAME")
    else
        skip "no usable cgroup hierarchy for systemd in containers"
    fi
}

install_tools() {
    local need=() p
    command -v systemd-nspawn > /dev/null || need+=(systemd-container)
    command -v debootstrap > /dev/null || need+=(debootstrap)
    command -v zstd > /dev/null || need+=(zstd)
    command -v ip > /dev/null || need+=(iproute2)
    command -v ssh-keygen > /dev/null || need+=(openssh-client)
    command -v bc > /dev/null || need+=(bc)
    python3 -c 'import ensurepip' 2> /dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]} (apt)"
        apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${need[@]}" > "$WORK/apt.log" 2>&1 \
            || { apt-get update > /dev/null 2>&1 && apt-get -o DPkg::Lock::Timeout=300 install -y \
                 --no-install-recommends "${need[@]}" > "$WORK/apt.log" 2>&1; } \
            || { tail -20 "$WORK/apt.log"; die "apt-get install ${need[*]} failed"; }
    fi
    # Probe what the kernel must do: a veth pair and a bridge inside a scratch namespace.
    local probe=$PFX-probe$$
    if ! { ip netns add "$probe" && ip -n "$probe" link add br0 type bridge \
           && ip -n "$probe" link add v0 type veth peer name v1; } 2> /dev/null; then
        ip netns del "$probe" 2> /dev/null || true
        skip "kernel cannot create network namespaces with bridges and veth pairs"
    fi
    ip netns del "$probe"
    VENV=$CACHE/venv-$(printf '%s %s' "$PIP_PINS" "$(python3 -V 2>&1)" | sha256sum | cut -c1-12)
    if [ ! -x "$VENV/bin/ansible-playbook" ] || [ ! -x "$VENV/bin/ansible-lint" ]; then
        log "installing $PIP_PINS into $VENV (pip)"
        rm -rf "$VENV"
        python3 -m venv "$VENV" && "$VENV/bin/pip" install -q $PIP_PINS > "$WORK/pip.log" 2>&1 \
            || { tail -20 "$WORK/pip.log"; rm -rf "$VENV"; die "pip install failed"; }
    fi
}

# --- packages --------------------------------------------------------------------------------
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)
UPGRADE_VERSION=${VERSION%.*}.$((${VERSION##*.} + 1))
RELEASE=1
DEB_ARCH=$(dpkg --print-architecture 2> /dev/null || echo amd64)
RPM_ARCH=$(uname -m)
pkg_files() { # pkg_files VERSION -> the four package files (this machine's architecture)
    local v=$1
    echo "sentinel-master_$v-${RELEASE}_$DEB_ARCH.deb sentinel-agent_$v-${RELEASE}_$DEB_ARCH.deb"
    echo "sentinel-master-$v-$RELEASE.$RPM_ARCH.rpm sentinel-agent-$v-$RELEASE.$RPM_ARCH.rpm"
}
# bg_wait LOG CMD...: run CMD in the repository, appending to LOG, in the background and waited
# for, so that a SIGTERM is acted on at once; on_exit kills it (BG_PID) if it still runs.
bg_wait() {
    local out=$1; shift
    (cd "$REPO" && exec "$@") >> "$out" 2>&1 < /dev/null &
    BG_PID=$!
    wait $BG_PID
}
have_pkgs() { local f; for f in $(pkg_files "$2"); do [ -s "$1/$f" ] || return 1; done; }
# deb_bin_sum DEB NAME: sha256 of /usr/bin/NAME inside the .deb
deb_bin_sum() { dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/bin/$2" | sha256sum | cut -c1-64; }
# base_matches_release: target/dist's .debs hold the binaries now in target/<triple>/release,
# which `--no-build` packages for the upgrade version. In a tree where someone rebuilt the
# binaries after the last dist, the "upgrade" would otherwise carry other code (even another
# protocol) than the base version.
base_matches_release() {
    local p triple=$RPM_ARCH-unknown-linux-musl
    for p in agent master; do
        [ -f "$REPO/target/$triple/release/sentinel-$p" ] || return 1
        [ "$(deb_bin_sum "$REPO/target/dist/sentinel-${p}_$VERSION-${RELEASE}_$DEB_ARCH.deb" "sentinel-$p")" \
            = "$(sha256sum < "$REPO/target/$triple/release/sentinel-$p" | cut -c1-64)" ] || return 1
    done
}
# stage_pkgs: the workspace version from target/dist (`cargo xtask dist` when missing or older
# than the built binaries), and an upgrade version packaged from the same binaries into the
# run's own directory (dist keeps one version per output directory: target/dist is left alone).
stage_pkgs() {
    local f p why=
    mkdir -p "$WORK/dist"
    if [ -n "${SENTINEL_E2E_REBUILD:-}" ]; then why="SENTINEL_E2E_REBUILD is set"
    elif ! have_pkgs "$REPO/target/dist" "$VERSION"; then why="packages missing in target/dist"
    elif ! base_matches_release; then why="target/dist is older than the binaries in target/"
    elif [ -n "$(find "$REPO/packaging" -newer "$REPO/target/dist/sentinel-master_$VERSION-${RELEASE}_$DEB_ARCH.deb" -type f | head -1)" ]; then
        why="packaging/ changed since target/dist was built"
    fi
    if [ -n "$why" ]; then
        log "building packages $VERSION: cargo xtask dist ($why)"
        bg_wait "$WORK/dist-$VERSION.log" cargo xtask dist \
            || { tail -30 "$WORK/dist-$VERSION.log"; die "cargo xtask dist failed"; }
        have_pkgs "$REPO/target/dist" "$VERSION" \
            || die "cargo xtask dist did not produce: $(pkg_files "$VERSION" | tr '\n' ' ')"
    fi
    for f in $(pkg_files "$VERSION"); do cp "$REPO/target/dist/$f" "$WORK/dist/"; done
    local up=$WORK/dist-$UPGRADE_VERSION
    log "packaging $UPGRADE_VERSION for the upgrade: cargo xtask dist --version $UPGRADE_VERSION --no-build"
    bg_wait "$up.log" cargo xtask dist --version "$UPGRADE_VERSION" --out "$up" --no-build \
        || { tail -30 "$up.log"; die "cargo xtask dist --version $UPGRADE_VERSION --no-build failed"; }
    have_pkgs "$up" "$UPGRADE_VERSION" || die "no $UPGRADE_VERSION packages in $up"
    for f in $(pkg_files "$UPGRADE_VERSION"); do cp "$up/$f" "$WORK/dist/"; done
    for p in agent master; do
        [ "$(deb_bin_sum "$WORK/dist/sentinel-${p}_$VERSION-${RELEASE}_$DEB_ARCH.deb" "sentinel-$p")" \
            = "$(deb_bin_sum "$WORK/dist/sentinel-${p}_$UPGRADE_VERSION-${RELEASE}_$DEB_ARCH.deb" "sentinel-$p")" ] \
            || die "the $VERSION and $UPGRADE_VERSION packages hold different sentinel-$p binaries (target/ was rebuilt during the run?)"
    done
}

# --- network ---------------------------------------------------------------------------------
net_up() {
    ip netns add "$SWITCH"
    ip -n "$SWITCH" link set lo up
    ip -n "$SWITCH" link add br0 type bridge
    ip -n "$SWITCH" link set br0 up
    local h addr
    for h in "$CLIENT" "${HOSTS[@]}"; do
        addr=${IP[$h]:-$CLIENT_IP}
        ip netns add "$h"
        ip -n "$h" link set lo up
        ip link add "sw-${h#"$PFX"-}" netns "$SWITCH" type veth peer name eth0 netns "$h"
        ip -n "$SWITCH" link set "sw-${h#"$PFX"-}" master br0
        ip -n "$SWITCH" link set "sw-${h#"$PFX"-}" up
        ip -n "$h" addr add "$addr/24" dev eth0
        ip -n "$h" link set eth0 up
    done
}

# --- containers ------------------------------------------------------------------------------
# Host PID of container NAME's systemd (PID 1 inside): the child of its systemd-nspawn.
cpid() {
    local p
    p=$(cat "$WORK/$1.pid" 2> /dev/null) || return 1
    pgrep -P "$p" -x systemd | head -1
}
# on NAME CMD...: run CMD inside the booted container NAME.
on() {
    local n=$1 p; shift
    p=$(cpid "$n") && [ -n "$p" ] || { echo "container $n is not running" >&2; return 1; }
    nsenter -t "$p" -a "$@"
}

prepare_rootfs() {
    # shellcheck source=lib/rootfs.sh
    . "$LIB/rootfs.sh"
    local tar key
    tar=$(rootfs_tarball "$CACHE") || die "could not build the root filesystem"
    key=$(rootfs_key)
    LOWER=$CACHE/root-$key
    if [ ! -d "$LOWER" ]; then
        log "extracting $(basename "$tar")"
        rm -rf "$LOWER.tmp" && mkdir -p "$LOWER.tmp"
        tar -C "$LOWER.tmp" --numeric-owner --zstd -xf "$tar" && mv "$LOWER.tmp" "$LOWER"
        find "$CACHE" -maxdepth 1 -name 'root-*' ! -name "root-$key" -exec rm -rf {} +
    fi
}

boot_all() {
    local h d cg
    ssh-keygen -q -t ed25519 -N '' -C sentinel-e2e -f "$WORK/ssh/id_ed25519"
    for h in "${HOSTS[@]}"; do
        d=$WORK/hosts/$h
        mkdir -p "$d/upper/etc" "$d/upper/root/.ssh" "$d/work" "$d/merged"
        echo "$h" > "$d/upper/etc/hostname"
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$d/upper/etc/machine-id"
        printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$h" > "$d/upper/etc/hosts"
        install -m 0600 "$WORK/ssh/id_ed25519.pub" "$d/upper/root/.ssh/authorized_keys"
        chmod 0700 "$d/upper/root" "$d/upper/root/.ssh"
        local cgs=()
        for cg in "${CGROUPS[@]}"; do cgs+=("$cg/$h"); done
        setsid "$LIB/boot.sh" "$h" "$LOWER" "$d" "$NSDIR" "${cgs[@]}" \
            > "$WORK/$h.console.log" 2>&1 < /dev/null  &
        echo $! > "$WORK/$h.pid"
    done
    local deadline=$((SECONDS + 90)) s
    for h in "${HOSTS[@]}"; do
        s=
        while [ $SECONDS -lt $deadline ]; do
            s=$(on "$h" systemctl is-system-running 2> /dev/null) || true
            [ "$s" = running ] || [ "$s" = degraded ] && break
            kill -0 "$(cat "$WORK/$h.pid")" 2> /dev/null || { tail -20 "$WORK/$h.console.log"; die "container $h exited"; }
            sleep 0.2
        done
        case $s in
            running) ;;
            degraded) log "$h is degraded: $(on "$h" systemctl --failed --plain --no-legend | tr '\n' ' ')" ;;
            *) tail -20 "$WORK/$h.console.log"; die "container $h did not boot within 90 s (state '$s')" ;;
        esac
    done
    # sshd answers in every host, seen from the client namespace.
    deadline=$((SECONDS + 30))
    for h in "${HOSTS[@]}"; do
        until ip netns exec "$CLIENT" ssh "${SSH_OPTS[@]}" "root@${IP[$h]}" true 2> /dev/null; do
            [ $SECONDS -lt $deadline ] || die "no SSH to $h"
            sleep 0.2
        done
    done
}

# --- teardown (EXIT trap; also run first, to clear what a killed earlier run left) ------------
teardown() {
    local h p c pids
    for h in "${HOSTS[@]}"; do
        c=$(cpid "$h" 2> /dev/null) || c=
        [ -n "$c" ] && timeout 5 nsenter -t "$c" -a systemctl poweroff --no-block > /dev/null 2>&1 || true
    done
    local deadline=$((SECONDS + 20))
    for h in "${HOSTS[@]}"; do
        p=$(cat "$WORK/$h.pid" 2> /dev/null) || continue
        while kill -0 "$p" 2> /dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        kill -0 "$p" 2> /dev/null && { log "teardown: $h did not power off; SIGKILL"; kill -KILL "$p" 2> /dev/null || true; }
        rm -f "$WORK/$h.pid"
    done
    # Whatever still lives in our cgroups or network namespaces was started by this harness
    # (containers' processes, ssh control masters): kill it by PID.
    for cg in "${CGROUPS[@]}"; do
        [ -d "$cg" ] || continue
        pids=$(find "$cg" -name cgroup.procs -exec cat {} + 2> /dev/null | sort -u)
        [ -n "$pids" ] && kill -KILL $pids 2> /dev/null || true
    done
    for h in "$CLIENT" "${HOSTS[@]}" "$SWITCH"; do
        [ -e "/run/netns/$h" ] || continue
        pids=$(ip netns pids "$h" 2> /dev/null)
        [ -n "$pids" ] && kill -KILL $pids 2> /dev/null || true
    done
    deadline=$((SECONDS + 10))
    for cg in "${CGROUPS[@]}"; do
        [ -d "$cg" ] || continue
        while [ $SECONDS -lt $deadline ] && [ -n "$(find "$cg" -name cgroup.procs -exec cat {} + 2> /dev/null)" ]; do
            sleep 0.2
        done
        find "$cg" -depth -type d -exec rmdir {} \; 2> /dev/null || true
    done
    for h in "$CLIENT" "${HOSTS[@]}" "$SWITCH"; do
        ip netns del "$h" 2> /dev/null || true
    done
    # The mounts live in the containers' private mount namespaces; nothing should remain here.
    grep -F " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2> /dev/null || true
    rm -rf "$WORK/hosts"
}

teardown_is_clean() {
    local left=()
    local cg h
    for cg in "${CGROUPS[@]}"; do [ -d "$cg" ] && left+=("cgroup $cg"); done
    for h in "$CLIENT" "${HOSTS[@]}" "$SWITCH"; do [ -e "/run/netns/$h" ] && left+=("netns $h"); done
    grep -qF " $WORK/" /proc/mounts && left+=("mounts under $WORK")
    ip -o link show 2> /dev/null | grep -qE ": sw-(ctl|master|web1|web2|db1|rpm)[@:]" \
        && left+=("veth in the root namespace")
    pgrep -f "systemd-nspawn.*-M $PFX-" > /dev/null && left+=("systemd-nspawn processes")
    [ ${#left[@]} -eq 0 ] || { echo "left behind: ${left[*]}"; return 1; }
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "${BG_PID:-}" ] && kill -TERM "$BG_PID" 2> /dev/null
    if [ -n "${SKIPPING:-}" ]; then teardown > /dev/null 2>&1; release_lock; exit 0; fi
    log "tearing down"
    teardown
    check "teardown: no process, mount, namespace, cgroup or veth left" teardown_is_clean
    release_lock
    local total
    total=$(echo "$(date +%s.%N) - $T0" | bc)
    echo
    [ "$rc" != 0 ] && fail "harness aborted (exit $rc), see above" > /dev/null
    echo "=== Sentinel e2e summary ==="
    printf '%s\n' "${RESULTS[@]}"
    printf 'wall time: %.1f s\n' "$total"
    printf '%d passed, %d failed\n' $(( ${#RESULTS[@]} - FAILED )) "$FAILED"
    printf 'rollout TOTAL: faults survived=%d (supervisor SIGKILLs under systemd, of %d) samples accounted=%d samples lost=%d new MainPID after %s s, /healthz naming it after %s s\n' \
        "${FAULTS_SURVIVED:-0}" "${SIGKILL_ROUNDS:-0}" "${SAMPLES_ACCOUNTED:-0}" "${SAMPLES_LOST:-0}" \
        "$(range "${RESTART_TIMES[@]}")" "$(range "${HTTP_TIMES[@]}")"
    echo "logs: $WORK"
    [ "$FAILED" = 0 ] && [ -z "${SENTINEL_E2E_KEEP:-}" ] && rm -rf "$WORK"
    [ "$FAILED" = 0 ] && exit 0 || exit 1
}

# One run at a time on a machine: the names, addresses and cgroups are fixed. A PID file, not
# flock, so that no process a run leaves behind can hold the lock.
LOCK=/run/lock/sentinel-e2e.pid
acquire_lock() {
    local p deadline=$((SECONDS + 1200))
    until (set -o noclobber; echo $$ > "$LOCK") 2> /dev/null; do
        p=$(cat "$LOCK" 2> /dev/null) || continue
        if ! kill -0 "$p" 2> /dev/null; then rm -f "$LOCK"; continue; fi
        [ $SECONDS -lt $deadline ] || die "another e2e run (PID $p) holds $LOCK"
        [ -n "${warned:-}" ] || { log "waiting for the e2e run with PID $p"; warned=1; }
        sleep 1
    done
}
release_lock() { [ "$(cat "$LOCK" 2> /dev/null)" = $$ ] && rm -f "$LOCK"; return 0; }

# --- ansible ---------------------------------------------------------------------------------
write_inventory() {
    cat > "$WORK/inventory.yml" <<EOF
all:
  vars:
    ansible_user: root
    ansible_python_interpreter: /usr/bin/python3
    ansible_ssh_private_key_file: $WORK/ssh/id_ed25519
    sentinel_master_package_dir: $WORK/dist
    sentinel_agent_package_dir: $WORK/dist
  children:
    sentinel_masters:
      hosts:
        $MASTER: {ansible_host: ${IP[$MASTER]}}
    sentinel_agents:
      # Labels (issue 13): a group var, a host var merged over it, and the inventory-group
      # label; the value with quotes, a backslash, non-ASCII and an astral character proves
      # the TOML escaping. LABELS_EXPECTED (below) is what the master must show.
      vars:
        sentinel_labels_from_groups: true
        sentinel_labels:
          env: e2e
          team: 'ops "on call" \ back ü 😀 it''s'
      hosts:
        $PFX-web1: {ansible_host: ${IP[$PFX-web1]}}
        $PFX-web2: {ansible_host: ${IP[$PFX-web2]}}
        $PFX-db1:
          ansible_host: ${IP[$PFX-db1]}
          sentinel_host_labels: {env: prod, role: primary, rack: 12, note: 'a=b, c'}
    web:
      hosts: {$PFX-web1: {}, $PFX-web2: {}}
    canary:
      hosts: {$PFX-web2: {}}
    db:
      hosts: {$PFX-db1: {}}
EOF
}
# What /api/v1/hosts must show as each agent's labels after write_inventory's rollout: the
# group var, db1's host var over it (env), `group` = the sorted inventory groups without
# sentinel_agents, joined by ",", and the number 12 as the text "12".
LABELS_EXPECTED='{
 "se2e-web1": {"env": "e2e", "group": "web", "team": "ops \"on call\" \\ back ü 😀 it'"'"'s"},
 "se2e-web2": {"env": "e2e", "group": "canary,web", "team": "ops \"on call\" \\ back ü 😀 it'"'"'s"},
 "se2e-db1": {"env": "prod", "group": "db", "note": "a=b, c", "rack": "12", "role": "primary",
              "team": "ops \"on call\" \\ back ü 😀 it'"'"'s"}
}'

# play NAME [ansible-playbook args...]: run site.yml from the client namespace; log in WORK.
play() {
    local name=$1; shift
    local out=$WORK/play-$name.log
    log "ansible-playbook site.yml ($name) $*"
    # In the background and waited for, so that a SIGTERM is acted on at once (bash runs a
    # trap only after the foreground command); teardown kills what runs in the namespace.
    (cd "$REPO/deploy/ansible" && exec ip netns exec "$CLIENT" env \
        ANSIBLE_HOME="$WORK/ansible" ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PIPELINING=True \
        ANSIBLE_NOCOLOR=1 ANSIBLE_FORKS=5 ANSIBLE_SSH_RETRIES=2 ANSIBLE_SSH_ARGS="${SSH_OPTS[*]}" \
        PATH="$VENV/bin:$PATH" \
        ansible-playbook -i "$WORK/inventory.yml" site.yml "$@") > "$out" 2>&1 < /dev/null  &
    if ! wait $!; then
        tail -40 "$out"
        return 1
    fi
    sed -n '/PLAY RECAP/,$p' "$out" | grep -E 'ok=' | sed 's/^/    /'
}
recap_changed() { # total changed= of the last run's recap
    sed -n '/PLAY RECAP/,$p' "$WORK/play-$1.log" | grep -oE 'changed=[0-9]+' | cut -d= -f2 | paste -sd+ | bc
}

COUNTERS="status connected run_id last_seq samples_received samples_replayed samples_dropped samples_missing duplicates reconnects"
fleet() { ip netns exec "$CLIENT" python3 "$LIB/fleet.py" "$API" "$@"; }
svc() { [ "$1" = "$MASTER" ] && echo sentinel-master || echo sentinel-agent; }
mainpid() { on "$1" systemctl show -p MainPID --value "$2"; }

# ============================================================================================
main() {
    preflight
    acquire_lock
    mkdir -p "$WORK" "$CACHE"
    teardown # whatever an earlier, killed run left
    rm -rf "$WORK" && mkdir -p "$WORK/ssh" "$NSDIR"
    trap on_exit EXIT
    trap 'exit 130' INT TERM
    SSH_OPTS=(-o ControlMaster=auto -o ControlPersist=120s -o "ControlPath=$WORK/ssh/cm-%C"
              -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
              -o ConnectTimeout=5 -o BatchMode=yes -i "$WORK/ssh/id_ed25519")

    install_tools
    log "tools ready (ansible venv $VENV)"
    prepare_rootfs
    log "root filesystem ready ($LOWER)"
    stage_pkgs
    log "packages $VERSION and $UPGRADE_VERSION staged"

    check "ansible-lint --profile production deploy/ansible" lint
    check "sentinel_agent role: every label rule, case by case (tests/e2e/labels, on the controller)" label_rules
    net_up
    log "private LAN up (10.231.0.0/24)"
    boot_all
    log "${#HOSTS[@]} containers booted, sshd answering"
    write_inventory

    # 1. first rollout
    play first || die "first playbook run failed"
    check_first_run
    FIRST_TOKEN=$(on "$MASTER" cat /etc/sentinel/fleet-token)
    # 2. idempotence
    play second || die "second playbook run failed"
    check "second playbook run: changed=0" test "$(recap_changed second)" = 0
    check_master_restart
    check_master_sigkill_loop
    check_agent_stop
    check_agent_sigkill
    check_interval_change
    check_labels_refused
    check_labels_change
    check_token_rotation
    check_upgrade
    check_rollback
    check_rpm
    if [ -n "${SENTINEL_E2E_HOLD:-}" ]; then
        log "holding the fleet for ${SENTINEL_E2E_HOLD}s (rm $WORK/hold to tear down now)"
        touch "$WORK/hold"
        local until=$((SECONDS + SENTINEL_E2E_HOLD))
        while [ -e "$WORK/hold" ] && [ $SECONDS -lt $until ]; do sleep 1; done
    fi
}

lint() {
    (cd "$REPO/deploy/ansible" && PATH="$VENV/bin:$PATH" ansible-lint --offline --profile production -q) \
        > "$WORK/ansible-lint.log" 2>&1 || { tail -30 "$WORK/ansible-lint.log"; return 1; }
}

label_rules() {
    PATH="$VENV/bin:$PATH" bash "$REPO/tests/e2e/labels/check.sh" "$WORK/label-cases"
}

all_active() {
    local ok=0 h s
    s=$(on "$MASTER" systemctl is-active sentinel-master) || ok=1
    echo "    $MASTER sentinel-master: $s"
    for h in "${AGENTS[@]}"; do
        s=$(on "$h" systemctl is-active sentinel-agent) || ok=1
        echo "    $h sentinel-agent: $s"
    done
    return $ok
}
all_up() { # all_up TIMEOUT [fleet.py wait options]
    local t=$1; shift
    local h want=()
    for h in "${AGENTS[@]}"; do want+=("$h=up"); done
    fleet wait --exact --timeout "$t" "$@" "${want[@]}"
}
mem_matches() {
    local h want got ok=0
    for h in "${AGENTS[@]}"; do
        want=$(( $(on "$h" awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024 ))
        got=$(fleet field "$h" mem_total_bytes)
        echo "    $h: /proc/meminfo $want, API $got"
        [ "$want" = "$got" ] || ok=1
    done
    return $ok
}
# The agent cannot reach POSIX shared memory (InaccessiblePaths=/dev/shm in its unit): on a
# host that also runs the master, the master's table is there, and both run as `sentinel`.
# A marker file in the host's /dev/shm is visible through PID 1's root and not through the
# agent's (its mount namespace).
agent_no_shm() {
    local h=${AGENTS[0]} pid ok=0
    pid=$(mainpid "$h" sentinel-agent)
    on "$h" sh -c 'echo e2e > /dev/shm/e2e-marker' || return 1
    if ! on "$h" test -e /proc/1/root/dev/shm/e2e-marker; then
        echo "    control failed: the marker is not visible through PID 1"; ok=1
    elif on "$h" test -e "/proc/$pid/root/dev/shm/e2e-marker"; then
        echo "    the agent (PID $pid) sees the host's /dev/shm"; ok=1
    fi
    on "$h" rm -f /dev/shm/e2e-marker
    return $ok
}
check_first_run() {
    check "first run: sentinel-master and 3x sentinel-agent active" all_active
    check "first run: the agent's /dev/shm is not the host's (InaccessiblePaths)" agent_no_shm
    check "first run: /api/v1/hosts lists exactly the 3 agents by hostname, all up" all_up 30
    check "first run: mem_total_bytes == MemTotal of each container" mem_matches
    check "first run: dashboard / served (200 text/html)" dashboard
    check "first run: each agent shows exactly its inventory labels (group var, host var, inventory groups)" \
        fleet labels "$LABELS_EXPECTED" --timeout 30
}
dashboard() {
    local r
    r=$(fleet get / 2> /dev/null) || { echo "    $r"; return 1; }
    echo "    GET / -> $r"
    [[ $r == "200 text/html"* ]]
}

no_gap() {
    local h m ok=0
    for h in "${AGENTS[@]}"; do
        m=$(fleet field "$h" samples_missing)
        echo "    $h samples_missing=$m"
        [ "$m" = 0 ] || ok=1
    done
    return $ok
}
check_master_restart() {
    local t
    all_up 30 > /dev/null || true
    fleet table $COUNTERS
    t=$(fleet now)
    local t0=$SECONDS
    on "$MASTER" systemctl restart sentinel-master
    echo "    systemctl restart sentinel-master returned after $((SECONDS - t0)) s"
    # `up` must come from samples received after the restart, not from a table that survived
    # it, nor from a bare handshake.
    check "master restart: all 3 up again within 10 s (with samples received after the restart)" \
        all_up 10 --seen-after "$t" --min samples_received=1
    fleet table $COUNTERS
    check "master restart: no sequence gap (samples_missing == 0)" no_gap
}

# --- the supervisor SIGKILLed under systemd (issue 7: Restart=on-failure + stale segment) ------
# SIGKILL_ROUNDS times, at a random moment while the agents stream, SIGKILL the unit's MainPID
# (the supervisor) and assert, each with a deadline: systemd starts a new one (new MainPID,
# NRestarts + 1), the old collector and http children are gone, the new supervisor found the
# dead one's segment, imaged it, removed it and restored the table from it (its journal lines,
# with the old supervisor's pid), /healthz names the new supervisor, and the 3 agents are `up`
# with samples received after the kill. Afterwards the agents stop (goodbye carries each one's
# own last_seq) and every sample of the run must be in the table exactly once.
SIGKILL_ROUNDS=3
FAULTS_SURVIVED=0 SAMPLES_ACCOUNTED=0 SAMPLES_LOST=0 RESTART_TIMES=() HTTP_TIMES=()
# range A...: "min-max" of the numbers given ("-" for none)
range() { [ $# -gt 0 ] && printf '%s\n' "$@" | sort -n | sed -n '1p;$p' | paste -sd- || echo -; }
nrestarts() { on "$MASTER" systemctl show -p NRestarts --value sentinel-master; }
children_of() { on "$MASTER" ps -o pid= --ppid "$1" | tr -s ' \n' ' '; }
# wait_new_mainpid OLD: until the unit is active with another MainPID (prints it); 20 s.
wait_new_mainpid() {
    local p s deadline=$((SECONDS + 20))
    while [ $SECONDS -lt $deadline ]; do
        p=$(mainpid "$MASTER" sentinel-master) || p=0
        s=$(on "$MASTER" systemctl show -p ActiveState --value sentinel-master) || s=
        if [ "$p" != "$1" ] && [ "$p" != 0 ] && [ "$s" = active ]; then echo "$p"; return 0; fi
        sleep 0.1
    done
    echo "    no new MainPID within 20 s (MainPID $p, $s)" >&2
    return 1
}
# all_gone PID...: none of them exists in the master host any more (10 s).
all_gone() {
    local p left deadline=$((SECONDS + 10))
    while :; do
        left=
        for p in "$@"; do on "$MASTER" kill -0 "$p" 2> /dev/null && left="$left $p"; done
        [ -z "$left" ] && return 0
        [ $SECONDS -lt $deadline ] || { echo "    still running:$left"; return 1; }
        sleep 0.1
    done
}
# stale_segment_handled NEW OLD: the journal of supervisor NEW says it removed the segment of
# supervisor OLD after imaging it, and restored the table from that image (10 s).
stale_segment_handled() {
    local j deadline=$((SECONDS + 10))
    while :; do
        j=$(on "$MASTER" journalctl -q -o cat -u sentinel-master "_PID=$1" 2> /dev/null) || j=
        if grep -q "old_supervisor_pid=Some($2).*removing a stale shared memory segment\|removing a stale shared memory segment.*old_supervisor_pid=Some($2)" <<< "$j" \
            && grep -q "took an image of the stale table" <<< "$j" \
            && grep -q 'restored the table.*the stale segment\|the stale segment.*restored the table' <<< "$j"; then
            grep -E "stale|restored the table" <<< "$j" | sed 's/^/    journal: /'
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "    journal of the new supervisor (pid $1):"; sed 's/^/    | /' <<< "$j" | head -20
            return 1
        fi
        sleep 0.2
    done
}
# healthz_names PID: /healthz answers 200 naming PID as supervisor_pid (15 s); writes the
# seconds since KILLED_AT to $WORK/healthz-dt.
healthz_names() {
    ip netns exec "$CLIENT" python3 - "$API/healthz" "$1" "$KILLED_AT" "$WORK/healthz-dt" <<'PY'
import json, sys, time, urllib.request
url, pid, killed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline, last = time.monotonic() + 15, "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.loads(r.read())
            last = body
            if r.status == 200 and body.get("supervisor_pid") == pid:
                dt = time.time() - killed
                print(f"    /healthz names supervisor {pid} {dt:.2f} s after the kill: {body}")
                print(f"{dt:.2f}", file=open(sys.argv[4], "w"))
                sys.exit(0)
    except (OSError, ValueError) as e:
        last = e
    time.sleep(0.05)
print(f"    /healthz did not name supervisor {pid} within 15 s; last: {last}")
sys.exit(1)
PY
}
check_master_sigkill_loop() {
    local i old new kids n0 n1 t0 dt round_failed
    all_up 30 > /dev/null || true
    fleet hosts > "$WORK/sigkill-before.json"
    n0=$(nrestarts)
    for i in $(seq 1 $SIGKILL_ROUNDS); do
        # A random moment: 1.0-4.9 s into the round (the fault's timing, not an assertion).
        sleep "$((RANDOM % 4 + 1)).$((RANDOM % 10))"
        round_failed=$FAILED
        old=$(mainpid "$MASTER" sentinel-master)
        kids=$(children_of "$old")
        t0=$(fleet now)
        KILLED_AT=$(date +%s.%N)
        on "$MASTER" kill -KILL "$old"
        log "SIGKILL $i/$SIGKILL_ROUNDS of the supervisor (MainPID $old, children $kids)"
        if ! new=$(wait_new_mainpid "$old"); then
            fail "supervisor SIGKILL $i: systemd restarted sentinel-master (new MainPID)"; continue
        fi
        dt=$(printf %.2f "$(echo "$(date +%s.%N) - $KILLED_AT" | bc)")
        RESTART_TIMES+=("$dt")
        n1=$(nrestarts)
        check "supervisor SIGKILL $i: systemd restarted it (MainPID $old -> $new after $dt s, NRestarts $((n0 + i - 1)) -> $n1)" \
            test "$n1" = $((n0 + i))
        rm -f "$WORK/healthz-dt"
        check "supervisor SIGKILL $i: /healthz names the new supervisor $new" healthz_names "$new"
        [ -s "$WORK/healthz-dt" ] && HTTP_TIMES+=("$(cat "$WORK/healthz-dt")")
        # shellcheck disable=SC2086 # one argument per pid
        check "supervisor SIGKILL $i: the old collector and http processes ($kids) are gone" all_gone $kids
        check "supervisor SIGKILL $i: the new supervisor imaged and removed the stale segment of $old and restored the table from it" \
            stale_segment_handled "$new" "$old"
        check "supervisor SIGKILL $i: all 3 agents up again (samples received after the kill)" \
            all_up 30 --seen-after "$t0" --min samples_received=1
        [ "$FAILED" = "$round_failed" ] && FAULTS_SURVIVED=$((FAULTS_SURVIVED + 1))
    done
    fleet table $COUNTERS
    # The agents' own count: a planned stop sends everything, then goodbye{last_seq}, and
    # logs that last_seq. The table must hold each of those samples exactly once.
    local h seqs=()
    for h in "${AGENTS[@]}"; do on "$h" systemctl stop sentinel-agent; done
    fleet wait --timeout 15 "${AGENTS[@]/%/=stopped}" > /dev/null || true
    for h in "${AGENTS[@]}"; do
        seqs+=("$h=$(on "$h" journalctl -q -o cat -u sentinel-agent | grep 'Said goodbye' | tail -1 \
            | grep -o 'last_seq=[0-9]*' | cut -d= -f2)")
    done
    fleet hosts > "$WORK/sigkill-after.json"
    check "supervisor SIGKILLs: every sample of every agent's run held exactly once (received == the agent's last_seq, nothing missing)" \
        accounted_exactly "${seqs[@]}"
    for h in "${AGENTS[@]}"; do on "$h" systemctl start sentinel-agent; done
    all_up 30 > /dev/null || true
}
# accounted_exactly NAME=LAST_SEQ...: compares the hosts before and after the kills. For each
# agent (same run throughout): last_seq == the agent's own, and the run's samples since the
# first snapshot were each counted once: received grew by exactly as much as last_seq, and
# missing, dropped and before_start did not grow. Prints the figures and sets the totals.
accounted_exactly() {
    local rc=0 a l
    python3 - "$WORK/sigkill-before.json" "$WORK/sigkill-after.json" "$@" > "$WORK/sigkill-accounting.txt" <<'PY' || rc=1
import json, sys
before = {h["hostname"]: h for h in json.load(open(sys.argv[1]))["hosts"]}
after = {h["hostname"]: h for h in json.load(open(sys.argv[2]))["hosts"]}
ok, accounted, lost = True, 0, 0
for arg in sys.argv[3:]:
    name, agent_seq = arg.split("=")
    b, a = before[name], after[name]
    d = {k: a[k] - b[k] for k in ("last_seq", "samples_received", "samples_missing",
                                   "samples_dropped", "samples_before_start", "duplicates", "reconnects")}
    good = (a["run_id"] == b["run_id"] and agent_seq.isdigit() and int(agent_seq) == a["last_seq"]
            and d["samples_received"] == d["last_seq"] and a["samples_missing"] == 0
            and d["samples_dropped"] == 0 and d["samples_before_start"] == 0)
    accounted += d["last_seq"]
    lost += max(d["last_seq"] - d["samples_received"], d["samples_missing"], 0)
    ok = ok and good
    print(f"    {name}: agent last_seq={agent_seq} table last_seq={a['last_seq']} run same={a['run_id'] == b['run_id']}"
          f" | during the kills: +{d['last_seq']} seq, +{d['samples_received']} received,"
          f" +{d['samples_missing']} missing, +{d['samples_dropped']} dropped,"
          f" +{d['samples_before_start']} before_start, +{d['duplicates']} duplicates (resent, not counted),"
          f" +{d['reconnects']} reconnects {'OK' if good else 'WRONG'}")
print(f"TOTALS {accounted} {lost}")
sys.exit(0 if ok else 1)
PY
    grep -v '^TOTALS' "$WORK/sigkill-accounting.txt"
    read -r _ a l < <(grep '^TOTALS' "$WORK/sigkill-accounting.txt")
    SAMPLES_ACCOUNTED=${a:-0} SAMPLES_LOST=${l:-0}
    return $rc
}

check_agent_stop() {
    local h=${AGENTS[0]}
    on "$h" systemctl stop sentinel-agent
    check "systemctl stop sentinel-agent on $h -> stopped" fleet wait --timeout 10 "$h=stopped"
    on "$h" systemctl start sentinel-agent
    all_up 15 > /dev/null || true
}

check_agent_sigkill() {
    local h=${AGENTS[1]} before after
    # The unit restarts a crashed agent after RestartSec=5s, before `down` (10 intervals) could
    # show. A runtime drop-in (gone at reboot, removed below) delays that restart so that the
    # whole stale -> down -> up path is seen; the restart itself is still systemd's Restart=.
    on "$h" mkdir -p /run/systemd/system/sentinel-agent.service.d
    printf '[Service]\nRestartSec=13s\n' | on "$h" tee /run/systemd/system/sentinel-agent.service.d/e2e-slow-restart.conf > /dev/null
    on "$h" systemctl daemon-reload
    before=$(mainpid "$h" sentinel-agent)
    on "$h" systemctl kill -s KILL sentinel-agent
    check "SIGKILL of the agent on $h -> stale -> down -> up after systemd restarts it" \
        fleet sequence "$h" stale down up --timeout 40
    after=$(mainpid "$h" sentinel-agent)
    check "SIGKILL: systemd restarted the agent (MainPID $before -> $after)" \
        test "$after" != "$before" -a "$after" != 0
    on "$h" rm -f /run/systemd/system/sentinel-agent.service.d/e2e-slow-restart.conf
    on "$h" systemctl daemon-reload
}

check_interval_change() {
    local h m0 m1 ok=0 a0=() a1=() t
    t=$(fleet now)
    m0=$(mainpid "$MASTER" sentinel-master)
    for h in "${AGENTS[@]}"; do a0+=("$(mainpid "$h" sentinel-agent)"); done
    if ! play interval -e sentinel_agent_interval=2s; then fail "interval change: playbook run"; return; fi
    m1=$(mainpid "$MASTER" sentinel-master)
    for h in "${AGENTS[@]}"; do a1+=("$(mainpid "$h" sentinel-agent)"); done
    check "interval change: master not restarted (MainPID $m0 -> $m1), its play changed=0" \
        eval 'test "$m0" = "$m1" && grep -qE "^$MASTER +: .* changed=0 " "$WORK/play-interval.log"'
    check "interval change: every agent restarted (MainPID ${a0[*]} -> ${a1[*]})" pids_all_differ
    for h in "${AGENTS[@]}"; do on "$h" grep -qx 'interval = "2s"' /etc/sentinel/agent.toml || ok=1; done
    check "interval change: agent.toml has interval = \"2s\" on every agent" test $ok = 0
    check "interval change: master sees interval_ms=2000 from every agent, all up" \
        all_up 20 --where interval_ms=2000 --seen-after "$t"
}
pids_all_differ() {
    local i
    for i in "${!a0[@]}"; do [ "${a0[$i]}" != "${a1[$i]}" ] && [ "${a1[$i]}" != 0 ] || return 1; done
}

# A bad label on one host (a second inventory source adds it to db1) fails the play at the
# role's check, before any agent is touched: no agent task changed, no agent restarted.
check_labels_refused() {
    local h a0=() a1=() ok=0
    for h in "${AGENTS[@]}"; do a0+=("$(mainpid "$h" sentinel-agent)"); done
    printf 'all:\n  children:\n    sentinel_agents:\n      hosts:\n        %s:\n          sentinel_host_labels: {Host-1: x}\n' \
        "$PFX-db1" > "$WORK/inventory-bad-label.yml"
    if play badlabel -i "$WORK/inventory-bad-label.yml" > /dev/null; then
        fail "bad label: the playbook run succeeded"; return
    fi
    for h in "${AGENTS[@]}"; do a1+=("$(mainpid "$h" sentinel-agent)"); done
    check "bad label: the run fails naming the host and the label" grep -qF \
        "sentinel_labels of $PFX-db1: label \\\"Host-1\\\": name must match [a-zA-Z_][a-zA-Z0-9_]*" "$WORK/play-badlabel.log"
    for h in "${AGENTS[@]}"; do
        grep -qE "^$h +: .* changed=0 " "$WORK/play-badlabel.log" || { echo "    $h: changed in the failed run"; ok=1; }
    done
    [ "${a0[*]}" = "${a1[*]}" ] || { echo "    agent MainPIDs ${a0[*]} -> ${a1[*]}"; ok=1; }
    check "bad label: no agent changed or restarted (MainPID ${a1[*]})" test $ok = 0
}

# A label change on one host (host var, from the command line here) restarts that agent only;
# its next hello carries the new set, the others keep theirs.
check_labels_change() {
    local h t b0=() b1=() w0 w1 want
    t=$(fleet now)
    w0=$(mainpid "$PFX-web1" sentinel-agent)
    for h in "$PFX-web2" "$PFX-db1"; do b0+=("$(mainpid "$h" sentinel-agent)"); done
    if ! play relabel --limit "$PFX-web1" -e '{"sentinel_host_labels": {"rack": "r2"}}'; then
        fail "label change: playbook run"; return
    fi
    w1=$(mainpid "$PFX-web1" sentinel-agent)
    for h in "$PFX-web2" "$PFX-db1"; do b1+=("$(mainpid "$h" sentinel-agent)"); done
    want=$(python3 -c 'import json, sys; w = json.loads(sys.argv[1]); w["se2e-web1"]["rack"] = "r2"
print(json.dumps({"se2e-web1": w["se2e-web1"]}))' "$LABELS_EXPECTED")
    check "label change: $PFX-web1 restarted (MainPID $w0 -> $w1) and its new hello carries rack=r2" \
        eval 'test "$w0" != "$w1" -a "$w1" != 0 && fleet labels "$want" --timeout 20 --seen-after "$t"'
    want=$(python3 -c 'import json, sys; w = json.loads(sys.argv[1]); w["se2e-web1"]["rack"] = "r2"
print(json.dumps(w))' "$LABELS_EXPECTED")
    check "label change: the other agents kept their labels and were not restarted (MainPID ${b0[*]} -> ${b1[*]})" \
        eval 'test "${b0[*]}" = "${b1[*]}" && fleet labels "$want" --timeout 5'
}

check_token_rotation() {
    local t h ok=0 want
    t=$(fleet now)
    want=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    # From a vars file, as a vault-encrypted file would be given (and not visible in ps).
    printf 'sentinel_master_fleet_token: "%s"\nsentinel_agent_fleet_token: "%s"\n' "$want" "$want" \
        > "$WORK/rotate.yml"
    if ! play rotate -e "@$WORK/rotate.yml"; then fail "token rotation: playbook run"; return; fi
    for h in "$MASTER" "${AGENTS[@]}"; do
        [ "$(on "$h" cat /etc/sentinel/fleet-token)" = "$want" ] || { echo "    $h: other token"; ok=1; }
        [ "$(on "$h" stat -c '%a %U:%G' /etc/sentinel/fleet-token)" = "640 root:sentinel" ] \
            || { echo "    $h: token file mode/owner $(on "$h" stat -c '%a %U:%G' /etc/sentinel/fleet-token)"; ok=1; }
    done
    check "token rotation (vault variables): new token, 0640 root:sentinel, on all 4 hosts" test $ok = 0
    check "token rotation: fleet up with the new token" all_up 30 --seen-after "$t" --min samples_received=1
    check "fleet tokens (generated and rotated) never appear in the playbook output" \
        not_logged "$want" "$FIRST_TOKEN"
}
not_logged() { ! grep -qF -e "$1" -e "$2" "$WORK"/play-*.log; }

check_upgrade() {
    local h ok=0 v line="# e2e: hand-edited line, must survive the upgrade" before=() after=() t
    for h in "$MASTER" "${AGENTS[@]}"; do before+=("$(mainpid "$h" "$(svc "$h")")"); done
    t=$(fleet now)
    h=${AGENTS[2]}
    echo "$line" | on "$h" tee -a /etc/sentinel/agent.toml > /dev/null
    # This rollout takes the packages from a URL (a web server in the client namespace).
    ip netns exec "$CLIENT" python3 -m http.server 8080 --bind "$CLIENT_IP" --directory "$WORK/dist" \
        > "$WORK/http-server.log" 2>&1 < /dev/null &
    disown
    if ! play upgrade -e sentinel_release="$UPGRADE_VERSION" \
            -e sentinel_master_package_url="http://$CLIENT_IP:8080" \
            -e sentinel_agent_package_url="http://$CLIENT_IP:8080/"; then
        fail "upgrade: playbook run"; return
    fi
    check "upgrade: the 4 hosts downloaded the $UPGRADE_VERSION packages from the URL" \
        test "$(grep -c "GET /sentinel-[a-z]*_$UPGRADE_VERSION-.* 200" "$WORK/http-server.log")" = 4
    for h in "$MASTER" "${AGENTS[@]}"; do
        v=$(on "$h" dpkg-query -W -f '${Version}' "$(svc "$h")")
        after+=("$(mainpid "$h" "$(svc "$h")")")
        echo "    $h $(svc "$h") $v"
        [ "$v" = "$UPGRADE_VERSION-$RELEASE" ] || ok=1
    done
    check "upgrade: every host has $UPGRADE_VERSION-$RELEASE installed" test $ok = 0
    a0=("${before[@]}") a1=("${after[@]}")
    check "upgrade: every service restarted (MainPID ${before[*]} -> ${after[*]})" pids_all_differ
    check "upgrade: hand-edited line in agent.toml on ${AGENTS[2]} kept" \
        on "${AGENTS[2]}" grep -qxF "$line" /etc/sentinel/agent.toml
    check "upgrade: fleet back up (samples received after the upgrade)" \
        all_up 30 --seen-after "$t" --min samples_received=1
}

check_rollback() {
    local h ok=0 v t
    t=$(fleet now)
    if ! play rollback -e sentinel_release="$VERSION"; then fail "rollback: playbook run"; return; fi
    for h in "$MASTER" "${AGENTS[@]}"; do
        v=$(on "$h" dpkg-query -W -f '${Version}' "$(svc "$h")")
        [ "$v" = "$VERSION-$RELEASE" ] || { echo "    $h $(svc "$h") $v"; ok=1; }
    done
    check "rollback (sentinel_release back to $VERSION): every host has $VERSION-$RELEASE" test $ok = 0
    check "rollback: fleet up (samples received after the rollback)" \
        all_up 30 --seen-after "$t" --min samples_received=1
}

check_rpm() {
    local h=$RPMHOST
    for f in sentinel-master-$VERSION-$RELEASE.$RPM_ARCH.rpm sentinel-agent-$VERSION-$RELEASE.$RPM_ARCH.rpm; do
        on "$h" sh -c "cat > /tmp/$f" < "$WORK/dist/$f"
    done
    check "rpm: both .rpm install (rpm -i --nodeps) with their scriptlets" rpm_install
    check "rpm: sentinel-master starts under systemd, /healthz 200" rpm_master
    check "rpm: sentinel-agent starts and is up at that master" rpm_agent
}
rpm_install() {
    local force=
    on "$RPMHOST" rpm --help 2> /dev/null | grep -q -- --force-debian && force=--force-debian
    on "$RPMHOST" sh -c "rpm -i --nodeps $force /tmp/sentinel-master-*.rpm /tmp/sentinel-agent-*.rpm" \
        && on "$RPMHOST" id sentinel && on "$RPMHOST" test -s /etc/sentinel/fleet-token
}
rpm_master() {
    on "$RPMHOST" systemctl enable --now sentinel-master && on "$RPMHOST" systemctl is-active sentinel-master \
        && ip netns exec "$CLIENT" python3 - "http://${IP[$RPMHOST]}:7411/healthz" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 15
while True:
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
            print("    /healthz", r.status, r.read()[:200].decode()); sys.exit(0)
    except OSError as e:
        if time.monotonic() > deadline: print("    /healthz:", e); sys.exit(1)
        time.sleep(0.2)
EOF
}
rpm_agent() {
    printf 'master = "127.0.0.1:7410"\ntoken_file = "/etc/sentinel/fleet-token"\n' \
        | on "$RPMHOST" tee -a /etc/sentinel/agent.toml > /dev/null
    on "$RPMHOST" systemctl enable --now sentinel-agent && on "$RPMHOST" systemctl is-active sentinel-agent \
        && ip netns exec "$CLIENT" python3 "$LIB/fleet.py" "http://${IP[$RPMHOST]}:7411" wait --timeout 20 "$RPMHOST=up"
}

main "$@"
