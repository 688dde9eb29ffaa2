#!/bin/bash
# Report (51) 02-nova-start.sh, continued: the provider network's gateway, and the agents.
# The public NIC is not put into br-provider: an interface in an OVS bridge carries no address,
# and the public NIC's DHCP address is the cluster's way out (compute1 NATs for everyone).
# Instead br-provider stays without a physical port and its own interface holds the provider
# network's gateway address; this host routes between it and the public NIC, and the external
# zone masquerades what leaves (the internal -> external policy, 01-network-gateway/01). Floating
# IPs are then reached through this host from the install network. A site whose provider network
# is a real public one gives the gateway a dedicated NIC without an address for it instead.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

ovs_userspace_unit
service_on "$UNIT_OVS"
ovs_bridge br-provider
# undo the earlier steps' bridging of the public NIC, which cut the cluster off
if ovs-vsctl list-ports br-provider | grep -qx "$PUBLIC_INTERFACE"; then
    ovs-vsctl del-port br-provider "$PUBLIC_INTERFACE"
fi
# at every boot, once Open vSwitch has brought the bridge back
write_file /etc/systemd/system/provisioner-provider-gateway.service 0644 <<CONF
[Unit]
Description=The Neutron provider network's gateway address on br-provider
Requires=$UNIT_OVS.service
After=$UNIT_OVS.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link set br-provider up
ExecStart=/usr/sbin/ip address replace $PROVIDER_GATEWAY/${PROVIDER_CIDR#*/} dev br-provider

[Install]
WantedBy=multi-user.target
CONF
if [ "$CHANGED" = 1 ]; then
    systemctl daemon-reload
fi
restart_if_changed provisioner-provider-gateway
service_on provisioner-provider-gateway
if ! firewall-cmd -q --permanent --zone=internal --query-interface=br-provider; then
    firewall-cmd -q --permanent --zone=internal --change-interface=br-provider
    firewall-cmd -q --reload
fi
service_on "$UNIT_OVS_AGENT" "$UNITS_NETWORK_AGENTS"
