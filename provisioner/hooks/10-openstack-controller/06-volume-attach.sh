#!/bin/bash
# Report (63) 07-nova-volume-attach.sh attached it to the VM.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if [ -z "$(openstack volume show test-volume -f value -c attachments | grep -o test-cirros || true)" ] \
   && [ "$(openstack volume show test-volume -f value -c status)" != in-use ]; then
    openstack server add volume test-cirros test-volume
fi
