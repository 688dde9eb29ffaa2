#!/bin/bash
# Report (52) 03-nova-network-create.sh made one flat network for the VMs. Here a flat provider
# network on the public side, a self-service network, and a router between them.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if ! openstack_exists network provider; then
    openstack network create --share --external --provider-physical-network provider --provider-network-type flat provider
fi
if ! openstack_exists subnet provider-subnet; then
    openstack subnet create --network provider --subnet-range "$PROVIDER_CIDR" --gateway "$PROVIDER_GATEWAY" \
        --allocation-pool "start=$PROVIDER_POOL_START,end=$PROVIDER_POOL_END" --no-dhcp provider-subnet
fi
if ! openstack_exists network selfservice; then
    openstack network create selfservice
fi
if ! openstack_exists subnet selfservice-subnet; then
    openstack subnet create --network selfservice --subnet-range "$SELFSERVICE_CIDR" selfservice-subnet
fi
if ! openstack_exists router router; then
    openstack router create router
    openstack router add subnet router selfservice-subnet
    openstack router set router --external-gateway provider
fi
