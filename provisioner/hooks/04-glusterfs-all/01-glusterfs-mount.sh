#!/bin/bash
# Report (10) 01-glusterfs-mount.sh appended to /etc/fstab (twice if run twice).
# Here the fstab line is set, not appended, and the volume mounted only if it is not. The mount
# is from localhost, so at boot it must wait for glusterd itself, not just for the network:
# x-systemd.requires orders it after glusterd.service and fails it if glusterd does not start.
# It is mounted by starting systemd's unit for that line, not by mount(8): the FUSE client is a
# process, and started from this step it would live in the runner's unit and die with it (the
# roles lab's transient units lost the mount as each step ended).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

mkdir -p "$ROOT$INSTANCES_DIR"
line_in_file /etc/fstab "^[^#]*[[:space:]]${INSTANCES_DIR}[[:space:]]" \
    "localhost:/$GLUSTER_VOLUME $INSTANCES_DIR glusterfs defaults,_netdev,x-systemd.requires=$UNIT_GLUSTERD.service 0 0"
if [ "$CHANGED" = 1 ]; then
    systemctl daemon-reload     # systemd's mount unit from the new line, with its order
fi
if ! mountpoint -q "$ROOT$INSTANCES_DIR"; then
    systemctl start "$(systemd-escape --path --suffix=mount "$INSTANCES_DIR")"
fi
