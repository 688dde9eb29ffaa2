#!/bin/bash
# Report (8) 01-glusterfs-probe.sh probed compute1..4 by hand.
# Here the compute hosts come from the registry, and only hosts not yet in the pool are
# probed. The runner starts this step only once every compute host's brick is ready.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pool=$(gluster pool list | awk 'NR > 1 { print $2 }')
for host in $COMPUTE_HOSTS; do
    if ! printf '%s\n' "$pool" | grep -qx "$host"; then
        gluster peer probe "$host"
    fi
done
