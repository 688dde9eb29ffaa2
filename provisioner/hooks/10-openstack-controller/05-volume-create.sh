#!/bin/bash
# Report (62) 06-nova-volume-create.sh created a nova-volume; Cinder on nova-volumes now. Where no
# cinder-volume service is up (07-openstack-controller/29 installs it only where its LVM back end
# can run) there is nothing to create the volume on: the step says so and skips, it does not
# leave a volume in error.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack volume service list --service cinder-volume -f value -c State | grep -qx up; then
    say "skipped: no cinder-volume service is up, so there is no back end to create test-volume on"
    exit 0
fi
if ! openstack_exists volume test-volume; then
    openstack volume create --size 1 test-volume
fi
