#!/bin/sh
# boot.sh NAME LOWER HOSTDIR NSDIR CGROUPS: boot an overlay of LOWER as container NAME with
# real systemd as PID 1, in the network namespace NAME. Runs in the foreground (run.sh
# starts it with setsid and records its PID, which ends up being systemd-nspawn's).
#
# - The process joins its own cgroup (CGROUPS: the directories to join) before exec, so the
#   containers do not share one (they come up `degraded` otherwise) and teardown can find
#   every process of the container there.
# - A private mount namespace: the overlay, the tmpfs on /run and the rbind of /run/netns
#   vanish with the last process, whatever happens to run.sh.
# - --keep-unit --register=no: there is no systemd/machined on the host side to talk to.
N=$1 LOWER=$2 H=$3 NSDIR=$4
shift 4
for cg in "$@"; do
    mkdir -p "$cg" && echo $$ > "$cg/cgroup.procs" || { echo "boot.sh: cannot join cgroup $cg" >&2; exit 1; }
done
exec unshare -m --propagation private sh -c '
N=$0 LOWER=$1 H=$2 NSDIR=$3
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$H/upper,workdir=$H/work" "$H/merged" || exit 1
mkdir -p "$NSDIR" && mount --rbind /run/netns "$NSDIR" || exit 1
mount -t tmpfs tmpfs /run || exit 1
exec systemd-nspawn --keep-unit --register=no --console=pipe --link-journal=no \
    --resolv-conf=off --timezone=off -q -M "$N" --hostname="$N" -b -D "$H/merged" \
    --network-namespace-path="$NSDIR/$N"' "$N" "$LOWER" "$H" "$NSDIR"
