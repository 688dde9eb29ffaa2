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
restart_if_changed "$UNIT_CHRONY"
