# %postun: reload units; on upgrade ($1 >= 1) restart the service if it was running.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart sentinel-agent.service >/dev/null 2>&1 || :
    fi
fi
exit 0
