#!/bin/bash
# Report (49) 05-nova-compute-start.sh.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNIT_NOVA_COMPUTE"
firewall_allow 5900-5999/tcp
