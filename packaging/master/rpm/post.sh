# %post: on first install create a random fleet token (0640 root:sentinel) unless one
# exists, and apply the distribution's preset policy to the unit.
TOKEN=/etc/sentinel/fleet-token
if [ ! -e "$TOKEN" ]; then
    (
        umask 077
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$TOKEN.new"
        echo >> "$TOKEN.new"
    )
    chgrp sentinel "$TOKEN.new"
    chmod 0640 "$TOKEN.new"
    mv -f "$TOKEN.new" "$TOKEN"
fi
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    systemctl preset sentinel-master.service >/dev/null 2>&1 || :
fi
exit 0
