#!/bin/bash
# Report (42) 23-nova-config.sh wrote nova.conf for nova-network and Qpid. Here RabbitMQ,
# Placement, Neutron and the metadata proxy's shared secret.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

conf=/etc/nova/nova.conf
ini_set "$conf" DEFAULT enabled_apis "osapi_compute,metadata"
ini_set "$conf" DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST:5672/"
ini_set "$conf" DEFAULT my_ip "$NODE_IP"
ini_set "$conf" api_database connection "mysql+pymysql://nova:$NOVA_DB_PASSWORD@$CONTROLLER_HOST/nova_api"
ini_set "$conf" database connection "mysql+pymysql://nova:$NOVA_DB_PASSWORD@$CONTROLLER_HOST/nova"
ini_set "$conf" api auth_strategy keystone
keystone_authtoken "$conf" nova "$NOVA_PASSWORD"
ini_set "$conf" vnc enabled true
# shellcheck disable=SC2016  # nova.conf's own variable, written literally
ini_set "$conf" vnc server_listen '$my_ip'
# shellcheck disable=SC2016  # nova.conf's own variable, written literally
ini_set "$conf" vnc server_proxyclient_address '$my_ip'
ini_set "$conf" glance api_servers "http://$CONTROLLER_HOST:9292"
ini_set "$conf" oslo_concurrency lock_path /var/lib/nova/tmp
nova_service_sections "$conf"
ini_set "$conf" neutron service_metadata_proxy true
ini_set "$conf" neutron metadata_proxy_shared_secret "$METADATA_SECRET"
ini_set "$conf" cinder os_region_name RegionOne
nova_service_user "$conf"
if [ -n "$NOVA_CONSOLEPROXY_DEFAULTS" ]; then
    line_in_file "$NOVA_CONSOLEPROXY_DEFAULTS" '^NOVA_CONSOLE_PROXY_TYPE=' 'NOVA_CONSOLE_PROXY_TYPE=novnc'
fi
restart_if_changed "$UNITS_NOVA_CONTROLLER"
