#!/bin/bash
# Report (61) 05-ssh-into-vm.sh logged into the VM. Here the VM must be ACTIVE and its console
# must show CirrOS reaching its login prompt. ACTIVE comes when QEMU starts, long before the guest
# has booted, so the console is read until the prompt shows, for CHECK_VM_TIMEOUT seconds at most.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

timeout=${CHECK_VM_TIMEOUT:-600}
admin_env
status=$(openstack server show test-cirros -f value -c status)
if [ "$status" != ACTIVE ]; then
    say "test-cirros is $status, not ACTIVE" >&2
    exit 1
fi
start=$SECONDS
until openstack console log show test-cirros | grep -q 'login:'; do
    if ((SECONDS - start >= timeout)); then
        say "test-cirros showed no login prompt on its console within ${timeout}s" >&2
        exit 1
    fi
    sleep 10
done
say "test-cirros reached its login prompt"
