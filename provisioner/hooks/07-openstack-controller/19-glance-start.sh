#!/bin/bash
# Report (36) 17-glance-start.sh.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNIT_GLANCE_API"
firewall_allow 9292/tcp
