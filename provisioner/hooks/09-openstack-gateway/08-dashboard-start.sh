#!/bin/bash
# Report (56) 07-dashboard-start.sh restarted httpd.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNIT_HTTPD"
firewall_allow http
