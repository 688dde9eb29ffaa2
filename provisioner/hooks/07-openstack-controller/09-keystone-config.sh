#!/bin/bash
# Report (26) 07-keystone-config.sh set the admin token and SQL connection.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

ini_set /etc/keystone/keystone.conf database connection "mysql+pymysql://keystone:$KEYSTONE_DB_PASSWORD@$CONTROLLER_HOST/keystone"
ini_set /etc/keystone/keystone.conf token provider fernet
