#!/bin/bash
# Not in the report: Placement, split out of Nova, tracks what each compute host can hold.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_PLACEMENT"
mysql_database placement placement "$PLACEMENT_DB_PASSWORD"
conf=/etc/placement/placement.conf
ini_set "$conf" placement_database connection "mysql+pymysql://placement:$PLACEMENT_DB_PASSWORD@$CONTROLLER_HOST/placement"
ini_set "$conf" api auth_strategy keystone
keystone_authtoken "$conf" placement "$PLACEMENT_PASSWORD"
if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'placement'")" = 0 ]; then
    su -s /bin/sh -c "placement-manage db sync" placement
fi
# RDO serves Placement from httpd on 8778, which enforcing SELinux refuses unless labelled
selinux_http_port 8778
restart_if_changed "$UNIT_PLACEMENT"
service_on "$UNIT_PLACEMENT"
firewall_allow 8778/tcp
