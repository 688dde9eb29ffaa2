#!/bin/bash
# nova-volume's start in report (44), as Cinder's services.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'cinder'")" = 0 ]; then
    su -s /bin/sh -c "cinder-manage db sync" cinder
fi
service_on "$UNITS_CINDER"
why=$(cinder_backend_unavailable)
if [ -z "$why" ]; then
    service_on "$UNIT_CINDER_VOLUME" "$UNIT_ISCSI_TARGET"
    firewall_allow 8776/tcp 3260/tcp
else
    skip_part "starting cinder-volume and the iSCSI target ($UNIT_CINDER_VOLUME $UNIT_ISCSI_TARGET)" "$why"
    firewall_allow 8776/tcp
fi
