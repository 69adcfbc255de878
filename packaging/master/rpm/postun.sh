# %postun: reload units; on upgrade ($1 >= 1) restart the service if it was running.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart sentinel-master.service >/dev/null 2>&1 || :
    fi
fi
# On erase: the table segment a crashed master left behind (a clean stop unlinks it; the
# unit has no RemoveIPC=, see sentinel-master.service).
if [ "$1" -eq 0 ]; then
    rm -f /dev/shm/sentinel-master
fi
exit 0
