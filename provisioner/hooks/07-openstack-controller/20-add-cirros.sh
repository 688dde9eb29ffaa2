#!/bin/bash
# Report (37) 18-add-cirros.sh downloaded CirrOS and added it with glance add. The site names the
# test image's URL (openstack.test_image: CirrOS by default; a rehearsal without internet points
# it at a small image its own service serves). An image left unfinished by an interrupted run
# (queued, never uploaded) is replaced; an active one is kept, with its id.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
status=$(openstack image show cirros -f value -c status 2>/dev/null || true)
if [ "$status" = active ]; then
    exit 0
fi
if [ -n "$status" ]; then
    say "image cirros is $status, not active: replacing it"
    openstack image delete cirros
fi
image="$ROOT/var/tmp/provisioner-test-image"
mkdir -p "$(dirname "$image")"
trap 'rm -f "$image"' EXIT
curl -fsSL --retry 3 --max-time 600 -o "$image" "$CIRROS_URL"
openstack image create --disk-format qcow2 --container-format bare --public --file "$image" cirros
status=$(openstack image show cirros -f value -c status)
if [ "$status" != active ]; then
    say "image cirros is $status after its upload, not active" >&2
    exit 1
fi
