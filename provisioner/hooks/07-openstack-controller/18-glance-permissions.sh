#!/bin/bash
# Report (35) 16-glance-permissions.sh chowned Glance's directories: the images LV is mounted
# over /var/lib/glance/images, so it must belong to glance.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(stat -c %U:%G "$ROOT$GLANCE_DIR")" != glance:glance ]; then
    chown glance:glance "$ROOT$GLANCE_DIR"
fi
