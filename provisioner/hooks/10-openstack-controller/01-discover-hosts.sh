#!/bin/bash
# Report Table 3 listed the services nova-manage should show. Compute hosts now have to be mapped
# into the cell; the runner starts this once nova-compute runs on every compute host.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
hosts=$(su -s /bin/sh -c "nova-manage cell_v2 list_hosts" nova)
unmapped=0
for host in $COMPUTE_HOSTS; do
    printf '%s\n' "$hosts" | grep -qw "$host" || unmapped=1
done
if [ "$unmapped" = 1 ]; then
    su -s /bin/sh -c "nova-manage cell_v2 discover_hosts" nova
fi
openstack compute service list
