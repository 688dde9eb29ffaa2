#!/bin/bash
# Report (62) 06-nova-volume-create.sh created a nova-volume; Cinder on nova-volumes now.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack_exists volume test-volume; then
    openstack volume create --size 1 test-volume
fi
