#!/bin/bash
# Report (29) 10-keystone-start.sh started openstack-keystone; it now runs inside Apache, whose
# configuration lives where the profile says (httpd's conf.d, or apache2's sites-enabled).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

printf 'ServerName %s\n' "$CONTROLLER_HOST" | write_file "$HTTPD_SERVERNAME_CONF" 0644
if [ ! -L "$ROOT$KEYSTONE_WSGI_LINK" ]; then
    mkdir -p "$(dirname "$ROOT$KEYSTONE_WSGI_LINK")"
    ln -s "$KEYSTONE_WSGI_CONF" "$ROOT$KEYSTONE_WSGI_LINK"
    CHANGED=1
fi
# enforcing SELinux refuses httpd port 5000 unless it is labelled http_port_t
selinux_http_port 5000
restart_if_changed "$UNIT_KEYSTONE"
service_on "$UNIT_KEYSTONE"
firewall_allow 5000/tcp
