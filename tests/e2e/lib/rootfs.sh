#!/bin/bash
# rootfs.sh: build (or reuse) the cached Debian bookworm root filesystem tarball that every
# e2e container boots from. Sourced by run.sh; `bash rootfs.sh` builds it standalone.
#
# The containers have no route to a mirror, so everything the Sentinel packages and the
# Ansible modules need on a managed host is baked in here: systemd as PID 1, sshd, Python
# with python3-apt (ansible.builtin.apt), adduser/passwd (the packages' maintainer scripts)
# and rpm (the .rpm check). The cache key is a hash of this list and of the steps below, so
# changing either builds a new tarball; old ones are pruned.

E2E_SUITE=bookworm
E2E_ROOTFS_PACKAGES="systemd,systemd-sysv,dbus,libpam-systemd,python3,python3-apt,openssh-server,iproute2,procps,curl,ca-certificates,adduser,passwd,rpm"
E2E_ROOTFS_RECIPE_VERSION=1   # bump when the customisation below changes

rootfs_key() {
    printf '%s\n' "$E2E_SUITE" "$E2E_ROOTFS_PACKAGES" "$E2E_ROOTFS_RECIPE_VERSION" "$(uname -m)" \
        | sha256sum | cut -c1-16
}

# The mirror apt already uses on this machine (the only one reachable); deb.debian.org otherwise.
rootfs_mirror() {
    local m
    m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 -E '/debian/?$')
    [ -n "$m" ] || m=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -m1 -E '/debian/?$')
    echo "${m:-http://deb.debian.org/debian}"
}

# rootfs_tarball CACHE_DIR -> prints the tarball path, building it if missing.
rootfs_tarball() {
    local cache=$1 key tar build
    key=$(rootfs_key)
    tar=$cache/rootfs-$E2E_SUITE-$key.tar.zst
    if [ -s "$tar" ]; then echo "$tar"; return 0; fi
    mkdir -p "$cache"
    build=$cache/build-$key
    rm -rf "$build"
    echo "e2e: building the $E2E_SUITE root filesystem (key $key; ~2 min, cached afterwards)" >&2
    debootstrap --variant=minbase --include="$E2E_ROOTFS_PACKAGES" "$E2E_SUITE" "$build" "$(rootfs_mirror)" \
        > "$cache/debootstrap-$key.log" 2>&1 \
        || { tail -20 "$cache/debootstrap-$key.log" >&2; rm -rf "$build"; return 1; }
    rootfs_customise "$build" || { rm -rf "$build"; return 1; }
    tar -C "$build" --numeric-owner -cf - . | zstd -q -T2 -3 -o "$tar.tmp" \
        && mv "$tar.tmp" "$tar" || { rm -f "$tar.tmp"; rm -rf "$build"; return 1; }
    rm -rf "$build"
    find "$cache" -maxdepth 1 -name "rootfs-*.tar.zst" ! -name "$(basename "$tar")" -delete
    echo "$tar"
}

rootfs_customise() {
    local r=$1
    # Every container gets its own machine-id (written into its overlay by run.sh).
    : > "$r/etc/machine-id"
    rm -f "$r/var/lib/dbus/machine-id"
    install -d -m 0700 "$r/root/.ssh"
    cat > "$r/etc/ssh/sshd_config.d/e2e.conf" <<'SSHD'
# e2e containers: root logs in with the run's throwaway key only.
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
SSHD
    # Nothing on these hosts may try to reach a network or waste the 2 shared cores.
    local u
    for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
             systemd-timesyncd.service getty@tty1.service console-getty.service systemd-networkd-wait-online.service; do
        ln -sf /dev/null "$r/etc/systemd/system/$u"
    done
    # The network is configured from outside (the veth in the namespace is already up).
    echo "127.0.0.1 localhost" > "$r/etc/hosts"
    rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* 2>/dev/null
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    rootfs_tarball "${1:-/var/cache/sentinel-e2e}"
fi
