#!/bin/bash
# nova-network's start in report (49), as Open vSwitch and its agent.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on openvswitch neutron-openvswitch-agent
firewall_allow 4789/udp
