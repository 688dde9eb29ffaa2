#!/bin/bash
# Report (19) 04-ntp-start.sh restarted ntpdate.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNIT_CHRONY"
if [ "$NODE_IS_CONTROLLER" = 1 ]; then
    firewall_allow ntp
fi
