#!/bin/bash
# Report (61) 05-ssh-into-vm.sh logged into the VM. Here the VM must be ACTIVE and its console
# must show CirrOS reaching its login prompt.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
status=$(openstack server show test-cirros -f value -c status)
if [ "$status" != ACTIVE ]; then
    say "test-cirros is $status, not ACTIVE" >&2
    exit 1
fi
openstack console log show test-cirros | grep -q 'login:'
