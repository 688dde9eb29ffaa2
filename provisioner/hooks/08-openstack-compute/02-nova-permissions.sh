#!/bin/bash
# Report (47) 03-nova-permissions.sh: the shared instances directory belongs to nova.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(stat -c %U:%G "$ROOT$INSTANCES_DIR")" != nova:nova ]; then
    chown nova:nova "$ROOT$INSTANCES_DIR"
fi
