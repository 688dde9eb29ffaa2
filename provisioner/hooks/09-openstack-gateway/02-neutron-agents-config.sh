#!/bin/bash
# Report (51) 02-nova-start.sh, continued: the provider network bridges to the public NIC; the agents' settings.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

ovs=/etc/neutron/plugins/ml2/openvswitch_agent.ini
ini_set "$ovs" ovs bridge_mappings "provider:br-provider"
ini_set "$ovs" ovs local_ip "$NODE_IP"
ini_set "$ovs" agent tunnel_types vxlan
ini_set "$ovs" agent l2_population true
ini_set /etc/neutron/l3_agent.ini DEFAULT interface_driver openvswitch
ini_set /etc/neutron/dhcp_agent.ini DEFAULT interface_driver openvswitch
ini_set /etc/neutron/dhcp_agent.ini DEFAULT enable_isolated_metadata true
ini_set /etc/neutron/metadata_agent.ini DEFAULT nova_metadata_host "$CONTROLLER_HOST"
ini_set /etc/neutron/metadata_agent.ini DEFAULT metadata_proxy_shared_secret "$METADATA_SECRET"
ini_set /etc/neutron/neutron.conf DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
restart_if_changed neutron-openvswitch-agent neutron-l3-agent neutron-dhcp-agent neutron-metadata-agent
