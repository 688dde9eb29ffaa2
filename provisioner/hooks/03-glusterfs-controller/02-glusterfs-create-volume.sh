#!/bin/bash
# Report (9) 02-glusterfs-create-volume.sh created vm-instances with "replica 4".
# Here the replica count follows the number of compute hosts, and the volume is created and
# started only if it is not already.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if ! gluster volume info "$GLUSTER_VOLUME" >/dev/null 2>&1; then
    bricks=()
    for host in $COMPUTE_HOSTS; do
        bricks+=("$host:$GLUSTER_BRICK")
    done
    if [ "$REPLICA_COUNT" -gt 1 ]; then
        gluster --mode=script volume create "$GLUSTER_VOLUME" replica "$REPLICA_COUNT" "${bricks[@]}"
    else
        gluster --mode=script volume create "$GLUSTER_VOLUME" "${bricks[@]}"
    fi
fi
if ! gluster volume info "$GLUSTER_VOLUME" | grep -q '^Status: Started'; then
    gluster --mode=script volume start "$GLUSTER_VOLUME"
fi
