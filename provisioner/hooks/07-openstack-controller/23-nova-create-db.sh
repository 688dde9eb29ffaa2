#!/bin/bash
# Report (40) 21-nova-create-db.sh; Nova now has three databases (API, cells, cell0).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

mysql_database nova_api nova "$NOVA_DB_PASSWORD"
mysql_database nova nova "$NOVA_DB_PASSWORD"
mysql_database nova_cell0 nova "$NOVA_DB_PASSWORD"
if ! mysql -N -e "SHOW GRANTS FOR 'nova'@'%'" | grep -qF "\`nova_cell0\`"; then
    mysql -e "GRANT ALL PRIVILEGES ON nova.* TO 'nova'@'%'; GRANT ALL PRIVILEGES ON nova_cell0.* TO 'nova'@'%'; GRANT ALL PRIVILEGES ON nova.* TO 'nova'@'localhost'; GRANT ALL PRIVILEGES ON nova_cell0.* TO 'nova'@'localhost'"
fi
