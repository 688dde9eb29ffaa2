#!/bin/bash
# Report (2) 02-ip-forward.sh edited sysctl.conf with sed and restarted the network.
# Here a drop-in file says it once, and only a change is applied.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

write_file /etc/sysctl.d/90-provisioner-ip-forward.conf 0644 <<'CONF'
# NAT for the local network (report 5.4.2)
net.ipv4.ip_forward = 1
CONF
if [ "$CHANGED" = 1 ]; then
    sysctl -q -p "$ROOT/etc/sysctl.d/90-provisioner-ip-forward.conf"
fi
