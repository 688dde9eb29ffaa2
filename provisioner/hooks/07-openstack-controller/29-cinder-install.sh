#!/bin/bash
# The report ran nova-volume on the nova-volumes volume group (Table 2). Cinder replaces it.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_CINDER"
mysql_database cinder cinder "$CINDER_DB_PASSWORD"
