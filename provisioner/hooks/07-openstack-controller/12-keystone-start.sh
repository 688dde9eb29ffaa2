#!/bin/bash
# Report (29) 10-keystone-start.sh started openstack-keystone. Where the profile serves Keystone
# from the web server (httpd's conf.d on RDO) its site is linked in; where the OS runs it as a
# service of its own (Debian's uwsgi keystone.service) there is no site and that unit starts.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ -n "$KEYSTONE_WSGI_LINK" ]; then
    printf 'ServerName %s\n' "$CONTROLLER_HOST" | write_file "$HTTPD_SERVERNAME_CONF" 0644
    if [ ! -L "$ROOT$KEYSTONE_WSGI_LINK" ]; then
        mkdir -p "$(dirname "$ROOT$KEYSTONE_WSGI_LINK")"
        ln -s "$KEYSTONE_WSGI_CONF" "$ROOT$KEYSTONE_WSGI_LINK"
        CHANGED=1
    fi
fi
# enforcing SELinux refuses httpd port 5000 unless it is labelled http_port_t
selinux_http_port 5000
restart_if_changed "$UNIT_KEYSTONE"
service_on "$UNIT_KEYSTONE"
firewall_allow 5000/tcp
