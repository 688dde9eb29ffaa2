#!/bin/bash
# Report (7) 04-glusterfs-start.sh restarted glusterd and chkconfig'ed it on.
# Here glusterd is enabled and started only if it is not already.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNIT_GLUSTERD"
