# %pre: create the sentinel system user and group (shared by both Sentinel packages).
getent group sentinel >/dev/null || groupadd -r sentinel
getent passwd sentinel >/dev/null || \
    useradd -r -g sentinel -d /var/lib/sentinel -M -s /sbin/nologin \
        -c "Sentinel cluster monitor" sentinel
exit 0
