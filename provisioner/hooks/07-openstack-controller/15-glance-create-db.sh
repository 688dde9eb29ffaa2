#!/bin/bash
# Report (32) 13-glance-create-db.sh, created only if absent.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

mysql_database glance glance "$GLANCE_DB_PASSWORD"
