#!/bin/bash
# Report (58) 02-boot-cirros.sh booted a CirrOS VM with euca-run-instances. Here after the key pair
# (03-keypair-add, listed before this step in plan.yaml): a key is injected only at boot, so the report's order left the VM without one.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack_exists flavor m1.tiny; then
    openstack flavor create --ram 128 --disk 1 --vcpus 1 m1.tiny
fi
if ! openstack_exists server test-cirros; then
    openstack server create --flavor m1.tiny --image cirros --network selfservice --key-name test-key --wait test-cirros
fi
