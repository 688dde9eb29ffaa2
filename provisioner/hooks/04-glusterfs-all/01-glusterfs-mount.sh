#!/bin/bash
# Report (10) 01-glusterfs-mount.sh appended to /etc/fstab (twice if run twice).
# Here the fstab line is set, not appended, and the volume mounted only if it is not. The mount
# is from localhost, so at boot it must wait for glusterd itself, not just for the network:
# x-systemd.requires orders it after glusterd.service and fails it if glusterd does not start.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

mkdir -p "$ROOT$INSTANCES_DIR"
line_in_file /etc/fstab "^[^#]*[[:space:]]${INSTANCES_DIR}[[:space:]]" \
    "localhost:/$GLUSTER_VOLUME $INSTANCES_DIR glusterfs defaults,_netdev,x-systemd.requires=$UNIT_GLUSTERD.service 0 0"
if ! mountpoint -q "$ROOT$INSTANCES_DIR"; then
    mount "$INSTANCES_DIR"
fi
