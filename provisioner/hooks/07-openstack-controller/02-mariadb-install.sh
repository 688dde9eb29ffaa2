#!/bin/bash
# Report (21) 02-mysql-install.sh: MySQL. MariaDB is CentOS's MySQL, listening on the local
# network only.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_MARIADB"
write_file "$MARIADB_OPENSTACK_CNF" 0644 <<CONF
[mysqld]
bind-address = $NODE_IP
default-storage-engine = innodb
innodb_file_per_table = on
max_connections = 4096
collation-server = utf8_general_ci
character-set-server = utf8
CONF
restart_if_changed "$UNIT_MARIADB"
