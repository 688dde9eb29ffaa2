#!/bin/bash
# Report (37) 18-add-cirros.sh downloaded CirrOS and added it with glance add.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack_exists image cirros; then
    image="$ROOT/var/tmp/cirros.img"
    mkdir -p "$(dirname "$image")"
    curl -fsSL --retry 3 -o "$image" "$CIRROS_URL"
    openstack image create --disk-format qcow2 --container-format bare --public --file "$image" cirros
    rm -f "$image"
fi
