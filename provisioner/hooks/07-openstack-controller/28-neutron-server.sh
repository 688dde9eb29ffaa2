#!/bin/bash
# The report ran nova-network (FlatDHCP). Neutron replaces it: the server and its ML2 plugin on
# the controller (Open vSwitch, VXLAN for self-service networks, a flat provider network).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_NEUTRON_SERVER"
mysql_database neutron neutron "$NEUTRON_DB_PASSWORD"
conf=/etc/neutron/neutron.conf
ini_set "$conf" database connection "mysql+pymysql://neutron:$NEUTRON_DB_PASSWORD@$CONTROLLER_HOST/neutron"
ini_set "$conf" DEFAULT core_plugin ml2
ini_set "$conf" DEFAULT service_plugins router
ini_set "$conf" DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
ini_set "$conf" DEFAULT auth_strategy keystone
ini_set "$conf" DEFAULT notify_nova_on_port_status_changes true
ini_set "$conf" DEFAULT notify_nova_on_port_data_changes true
keystone_authtoken "$conf" neutron "$NEUTRON_PASSWORD"
ini_set "$conf" nova auth_url "http://$CONTROLLER_HOST:5000"
ini_set "$conf" nova auth_type password
ini_set "$conf" nova project_domain_name Default
ini_set "$conf" nova user_domain_name Default
ini_set "$conf" nova region_name RegionOne
ini_set "$conf" nova project_name service
ini_set "$conf" nova username nova
ini_set "$conf" nova password "$NOVA_PASSWORD"
ini_set "$conf" oslo_concurrency lock_path /var/lib/neutron/tmp
ml2=/etc/neutron/plugins/ml2/ml2_conf.ini
ini_set "$ml2" ml2 type_drivers "flat,vlan,vxlan"
ini_set "$ml2" ml2 tenant_network_types vxlan
ini_set "$ml2" ml2 mechanism_drivers "openvswitch,l2population"
ini_set "$ml2" ml2 extension_drivers port_security
ini_set "$ml2" ml2_type_flat flat_networks provider
ini_set "$ml2" ml2_type_vxlan vni_ranges "1:1000"
if [ ! -L "$ROOT/etc/neutron/plugin.ini" ]; then
    ln -s /etc/neutron/plugins/ml2/ml2_conf.ini "$ROOT/etc/neutron/plugin.ini"
fi
if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'neutron'")" = 0 ]; then
    su -s /bin/sh -c "neutron-db-manage --config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head" neutron
fi
restart_if_changed "$UNIT_NEUTRON_SERVER"
service_on "$UNIT_NEUTRON_SERVER"
firewall_allow 9696/tcp
