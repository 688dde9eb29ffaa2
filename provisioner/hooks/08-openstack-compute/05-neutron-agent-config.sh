#!/bin/bash
# nova-network ran on every host in the report's FlatDHCP mode; here the Open vSwitch agent,
# tunnelling self-service networks (VXLAN) over the local network. Every compute host maps the
# flat provider network to br-provider, as the 2025.1 Open vSwitch guide has it: without the
# mapping, a VM on the provider network cannot be scheduled to compute2-4 (the gateway's bridge
# reaches the outside; the others' carry the network between their VMs and the gateway's).
# The datapath is the kernel's wherever the kernel has Open vSwitch's module; without it (a
# container on a host kernel built without it) OVS's userspace datapath, which the agent must be
# told about: it makes br-int and br-tun on the datapath named here (lib/common.sh ovs_datapath).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_OVS_AGENT"
conf=/etc/neutron/neutron.conf
ini_set "$conf" DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
ini_set "$conf" oslo_concurrency lock_path /var/lib/neutron/tmp
ovs=/etc/neutron/plugins/ml2/openvswitch_agent.ini
ini_set "$ovs" ovs bridge_mappings "provider:br-provider"
ini_set "$ovs" ovs local_ip "$NODE_IP"
ini_set "$ovs" ovs datapath_type "$(ovs_datapath)"
ini_set "$ovs" agent tunnel_types vxlan
ini_set "$ovs" agent l2_population true
ini_set "$ovs" securitygroup enable_security_group true
ini_set "$ovs" securitygroup firewall_driver openvswitch
restart_if_changed "$UNIT_OVS_AGENT"
