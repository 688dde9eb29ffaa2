#!/bin/bash
# Report (41) 22-nova-permissions.sh: the shared instances directory (the GlusterFS mount)
# belongs to nova on every host.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(stat -c %U:%G "$ROOT$INSTANCES_DIR")" != nova:nova ]; then
    chown nova:nova "$ROOT$INSTANCES_DIR"
fi
