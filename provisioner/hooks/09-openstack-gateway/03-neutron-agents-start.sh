#!/bin/bash
# Report (51) 02-nova-start.sh, continued: Open vSwitch, the provider bridge on the public NIC, and the agents.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on openvswitch
if ! ovs-vsctl br-exists br-provider; then
    ovs-vsctl add-br br-provider
fi
if ! ovs-vsctl list-ports br-provider | grep -qx "$PUBLIC_INTERFACE"; then
    ovs-vsctl add-port br-provider "$PUBLIC_INTERFACE"
fi
service_on neutron-openvswitch-agent neutron-l3-agent neutron-dhcp-agent neutron-metadata-agent
