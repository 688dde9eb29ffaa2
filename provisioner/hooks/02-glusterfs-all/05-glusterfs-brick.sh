#!/bin/bash
# Table 1 puts lv_gluster (XFS) at /export/gluster as the GlusterFS brick. The brick is a
# directory inside the mount, so an unmounted disk can never silently become the brick.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if ! mountpoint -q "$ROOT$GLUSTER_EXPORT"; then
    say "$GLUSTER_EXPORT is not mounted: lv_gluster is missing" >&2
    exit 1
fi
if [ ! -d "$ROOT$GLUSTER_BRICK" ]; then
    mkdir -p "$ROOT$GLUSTER_BRICK"
fi
