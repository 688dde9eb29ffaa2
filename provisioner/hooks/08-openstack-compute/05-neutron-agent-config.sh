#!/bin/bash
# nova-network ran on every host in the report's FlatDHCP mode; here the Open vSwitch agent,
# tunnelling self-service networks (VXLAN) over the local network.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install openstack-neutron-openvswitch
conf=/etc/neutron/neutron.conf
ini_set "$conf" DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
ini_set "$conf" oslo_concurrency lock_path /var/lib/neutron/tmp
ovs=/etc/neutron/plugins/ml2/openvswitch_agent.ini
ini_set "$ovs" ovs local_ip "$NODE_IP"
ini_set "$ovs" agent tunnel_types vxlan
ini_set "$ovs" agent l2_population true
ini_set "$ovs" securitygroup enable_security_group true
ini_set "$ovs" securitygroup firewall_driver openvswitch
restart_if_changed neutron-openvswitch-agent
