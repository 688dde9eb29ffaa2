#!/bin/bash
# Report (4) 01-iptables-flush.sh opened every port by flushing iptables.
# Here only GlusterFS's ports are opened; the rest of the firewall stays.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

firewall_allow glusterfs
