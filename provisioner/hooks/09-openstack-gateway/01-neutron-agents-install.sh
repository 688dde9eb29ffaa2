#!/bin/bash
# Report (51) 02-nova-start.sh started nova-network on the gateway. It is the network node now:
# Neutron's L3 (routers, NAT), DHCP and metadata agents.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_NETWORK_NODE"
