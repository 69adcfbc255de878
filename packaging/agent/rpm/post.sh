# %post: on first install apply the distribution's preset policy (Fedora/RHEL: disabled
# unless a preset enables it). The agent cannot run before `master` is configured anyway;
# the Ansible role enables and starts it.
if [ "$1" -eq 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    systemctl preset sentinel-agent.service >/dev/null 2>&1 || :
fi
exit 0
