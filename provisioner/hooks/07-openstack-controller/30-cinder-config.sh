#!/bin/bash
# Cinder's LVM back end on Table 2's nova-volumes volume group, exported over iSCSI (LIO).
# The Block Storage guide (docs.openstack.org/cinder/2025.1/install/cinder-storage-install-rdo.html)
# has the host's LVM see only its own PVs, never the PVs guests create inside Cinder's volumes.
# RHEL 9's LVM sees only the devices in its devices file (lvmdevices), so nova-volumes' PV must be
# listed there; elsewhere a global_filter accepts the host's PVs and rejects the rest.
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
why=$(cinder_backend_unavailable)
if [ -n "$why" ]; then
    skip_part "the LVM device filter for $CINDER_VG" "$why"
    restart_if_changed "$UNITS_CINDER"
    exit 0
fi
pvs_of_vg=$(pvs --noheadings -o pv_name -S "vg_name=$CINDER_VG" | awk '{ print $1 }')
if [ -z "$pvs_of_vg" ]; then
    say "volume group $CINDER_VG has no physical volume: Table 2's sda3 is missing" >&2
    exit 1
fi
if [ "$LVM_DEVICES_FILE" = 1 ]; then
    listed=$(lvmdevices)
    for pv in $pvs_of_vg; do
        if ! printf '%s\n' "$listed" | grep -q "DEVNAME=$pv "; then
            lvmdevices -y --adddev "$pv"
        fi
    done
else
    accept=""
    for pv in $(pvs --noheadings -o pv_name | awk '{ print $1 }'); do
        accept+="\"a|^$pv\$|\", "
    done
    write_file /etc/lvm/lvmlocal.conf 0644 <<CONF
# Written by the provisioner (30-cinder-config): the host's own PVs only, not guests' PVs inside
# Cinder's volumes.
devices {
    global_filter = [ ${accept}"r|.*|" ]
}
CONF
fi
restart_if_changed "$UNITS_CINDER" "$UNIT_CINDER_VOLUME"
