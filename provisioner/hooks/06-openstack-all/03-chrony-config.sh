#!/bin/bash
# Report (18) 03-ntp-config.sh sed-replaced three servers in ntp.conf.
# Here chrony.conf is written whole from the site's NTP servers; the controller also serves
# time to the local network, so every node agrees even when the outside is unreachable.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

{
    for server in $NTP_SERVERS; do
        printf 'server %s iburst\n' "$server"
    done
    if [ "$NODE_IS_CONTROLLER" = 1 ]; then
        printf 'allow %s\nlocal stratum 10\n' "$INTERNAL_NET"
    else
        printf 'server %s iburst prefer\n' "$CONTROLLER_HOST"
    fi
    printf 'driftfile %s\nmakestep 1.0 3\nrtcsync\nlogdir /var/log/chrony\n' "$CHRONY_DRIFTFILE"
} | write_file "$CHRONY_CONF" 0644

# A node that may not set the clock (no CAP_SYS_TIME in init's bounding set, which the unit's
# ConditionCapability reads: a container sharing its host's clock) would have chronyd skipped,
# and with it the controller's time service. There chronyd runs with -x: it still measures its
# sources and serves time to the network, and leaves the clock alone (the unit's options kept).
bounding=$(awk '/^CapBnd:/ { print $2 }' "$ROOT/proc/1/status" 2>/dev/null || true)
if [ -n "$bounding" ] && (( ((16#$bounding) >> 25 & 1) == 0 )); then
    say "no CAP_SYS_TIME here: chronyd runs with -x (serves and tracks time, never sets the clock)"
    write_file "/etc/systemd/system/$UNIT_CHRONY.service.d/no-clock.conf" 0644 <<CONF
# written by the provisioner: this node may not set the clock (no CAP_SYS_TIME)
[Unit]
ConditionCapability=
[Service]
ExecStart=
ExecStart=!/usr/sbin/chronyd -x \$$CHRONY_OPTIONS_VAR
CONF
    if [ "$CHANGED" = 1 ]; then
        systemctl daemon-reload
    fi
fi
restart_if_changed "$UNIT_CHRONY"
