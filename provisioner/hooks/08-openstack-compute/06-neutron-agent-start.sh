#!/bin/bash
# nova-network's start in report (49), as Open vSwitch and its agent. The agent stops at start
# if a bridge named in bridge_mappings is missing, so br-provider is made first (empty here;
# the gateway gives its own an address, 09-openstack-gateway/03), on the agent's datapath.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

ovs_userspace_unit
service_on "$UNIT_OVS"
ovs_bridge br-provider
service_on "$UNIT_OVS_AGENT"
firewall_allow 4789/udp
