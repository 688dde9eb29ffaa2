#!/bin/bash
# Report (30) 11-keystone-create-users.sh created tenants, users, roles, services and endpoints
# with keystone-init. Here the service project and one user, service and three endpoints per
# OpenStack service, each created only if absent.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack_exists project service; then
    openstack project create --domain default --description "Service Project" service
fi
# Each password by its own name, not through an indirection: the service sends a node only the
# secrets its steps name (plan.yaml), and a test reads the names from these files.
declare -A password=([glance]="$GLANCE_PASSWORD" [placement]="$PLACEMENT_PASSWORD" [nova]="$NOVA_PASSWORD"
                     [neutron]="$NEUTRON_PASSWORD" [cinder]="$CINDER_PASSWORD")
# What exists, read once (each openstack call is seconds of client start-up), then what is missing.
users=$(openstack user list --domain default -f value -c Name)
assigned=$(openstack role assignment list --project service --role admin --names -f value -c User)
services=$(openstack service list -f value -c Type)
endpoints=$(openstack endpoint list -f value -c "Service Type" -c Interface)
for entry in "glance image 9292" "placement placement 8778" "nova compute 8774/v2.1" \
             "neutron network 9696" "cinder volumev3 8776/v3"; do
    read -r user type port <<<"$entry"
    if ! grep -qx "$user" <<<"$users"; then
        openstack user create --domain default --password "${password[$user]}" "$user"
    fi
    if ! grep -qx "$user@Default" <<<"$assigned"; then
        openstack role add --project service --user "$user" admin
    fi
    if ! grep -qx "$type" <<<"$services"; then
        openstack service create --name "$user" "$type"
    fi
    for interface in public internal admin; do
        if ! grep -qx "$type $interface" <<<"$endpoints"; then
            openstack endpoint create --region RegionOne "$type" "$interface" "http://$CONTROLLER_HOST:$port"
        fi
    done
done
