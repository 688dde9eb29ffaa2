#!/bin/bash
# Cinder's LVM back end on Table 2's nova-volumes volume group, exported over iSCSI (LIO).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

conf=/etc/cinder/cinder.conf
ini_set "$conf" database connection "mysql+pymysql://cinder:$CINDER_DB_PASSWORD@$CONTROLLER_HOST/cinder"
ini_set "$conf" DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
ini_set "$conf" DEFAULT auth_strategy keystone
ini_set "$conf" DEFAULT my_ip "$NODE_IP"
ini_set "$conf" DEFAULT enabled_backends lvm
ini_set "$conf" DEFAULT glance_api_servers "http://$CONTROLLER_HOST:9292"
keystone_authtoken "$conf" cinder "$CINDER_PASSWORD"
ini_set "$conf" lvm volume_driver cinder.volume.drivers.lvm.LVMVolumeDriver
ini_set "$conf" lvm volume_group "$CINDER_VG"
ini_set "$conf" lvm target_protocol iscsi
ini_set "$conf" lvm target_helper lioadm
ini_set "$conf" oslo_concurrency lock_path /var/lib/cinder/tmp
restart_if_changed openstack-cinder-api openstack-cinder-scheduler openstack-cinder-volume
