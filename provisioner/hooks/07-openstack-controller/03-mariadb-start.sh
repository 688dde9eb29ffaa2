#!/bin/bash
# Report (22) 03-mysql-start.sh set a root password and printed it. MariaDB's root logs in
# over the local socket only (unix_socket), so no password exists to leak; anonymous users go.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$UNIT_MARIADB"
if [ -n "$(mysql -N -e "SELECT User FROM mysql.user WHERE User = ''")" ]; then
    mysql -e "DELETE FROM mysql.user WHERE User = ''; FLUSH PRIVILEGES"
fi
firewall_allow mysql
