#!/bin/bash
# Report (63) 07-nova-volume-attach.sh attached it to the VM (skipped, saying why, where
# 05-volume-create had no back end to make it on).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack_exists volume test-volume; then
    say "skipped: there is no test-volume to attach (see 10-openstack-controller/05-volume-create)"
    exit 0
fi
if [ -z "$(openstack volume show test-volume -f value -c attachments | grep -o test-cirros || true)" ] \
   && [ "$(openstack volume show test-volume -f value -c status)" != in-use ]; then
    openstack server add volume test-cirros test-volume
fi
