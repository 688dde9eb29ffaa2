#!/bin/bash
# Report (53) 04-nova-secgroup-add.sh allowed ping and SSH into VMs.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if [ -z "$(openstack security group rule list default --protocol icmp -f value -c ID)" ]; then
    openstack security group rule create --proto icmp default
fi
if [ -z "$(openstack security group rule list default --protocol tcp --dst-port 22 -f value -c ID)" ]; then
    openstack security group rule create --proto tcp --dst-port 22 default
fi
