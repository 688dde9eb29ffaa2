#!/bin/bash
# Report (51) 02-nova-start.sh, continued: the L3, DHCP and metadata agents' settings (the Open
# vSwitch agent's, bridge mapping included, are every compute host's: 08-openstack-compute/05).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

ini_set /etc/neutron/l3_agent.ini DEFAULT interface_driver openvswitch
ini_set /etc/neutron/dhcp_agent.ini DEFAULT interface_driver openvswitch
ini_set /etc/neutron/dhcp_agent.ini DEFAULT enable_isolated_metadata true
# On OVS's userspace datapath, an internal port moved into a router's or DHCP server's namespace
# is lost to ovs-vswitchd (its ioctls by name fail there: "No such device"); a veth pair keeps
# the bridge's end in this namespace.
if [ "$(ovs_configured_datapath)" = netdev ]; then
    ini_set /etc/neutron/l3_agent.ini DEFAULT ovs_use_veth true
    ini_set /etc/neutron/dhcp_agent.ini DEFAULT ovs_use_veth true
fi
ini_set /etc/neutron/metadata_agent.ini DEFAULT nova_metadata_host "$CONTROLLER_HOST"
ini_set /etc/neutron/metadata_agent.ini DEFAULT metadata_proxy_shared_secret "$METADATA_SECRET"
ini_set /etc/neutron/neutron.conf DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
restart_if_changed "$UNIT_OVS_AGENT" "$UNITS_NETWORK_AGENTS"
