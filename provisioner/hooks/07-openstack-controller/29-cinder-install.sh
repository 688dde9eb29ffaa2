#!/bin/bash
# The report ran nova-volume on the nova-volumes volume group (Table 2). Cinder replaces it.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_CINDER"
why=$(cinder_backend_unavailable)
if [ -z "$why" ]; then
    pkg_install "$PKGS_CINDER_VOLUME"
else
    skip_part "installing the LVM/iSCSI back end ($PKGS_CINDER_VOLUME)" "$why"
fi
mysql_database cinder cinder "$CINDER_DB_PASSWORD"
