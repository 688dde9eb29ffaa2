#!/bin/bash
# Report (29) 10-keystone-start.sh started openstack-keystone; it now runs inside Apache.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

printf 'ServerName %s\n' "$CONTROLLER_HOST" | write_file /etc/httpd/conf.d/00-servername.conf 0644
if [ ! -L "$ROOT/etc/httpd/conf.d/wsgi-keystone.conf" ]; then
    ln -s /usr/share/keystone/wsgi-keystone.conf "$ROOT/etc/httpd/conf.d/wsgi-keystone.conf"
    CHANGED=1
fi
restart_if_changed httpd
service_on httpd
firewall_allow 5000/tcp
