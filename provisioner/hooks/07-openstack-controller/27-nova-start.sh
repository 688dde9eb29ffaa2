#!/bin/bash
# Report (44) 25-nova-start.sh started nova-api, -network, -scheduler, -volume and others.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNITS_NOVA_CONTROLLER"
firewall_allow 8774/tcp 8775/tcp 6080/tcp
