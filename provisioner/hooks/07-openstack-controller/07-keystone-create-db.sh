#!/bin/bash
# Report (24) 05-keystone-create-db.sh, created only if absent.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

mysql_database keystone keystone "$KEYSTONE_DB_PASSWORD"
