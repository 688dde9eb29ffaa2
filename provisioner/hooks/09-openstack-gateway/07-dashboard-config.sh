#!/bin/bash
# Report (55) 06-dashboard-config.sh pointed Horizon at Keystone.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

write_file "$DASHBOARD_SETTINGS" 0644 <<CONF
OPENSTACK_HOST = "$CONTROLLER_HOST"
OPENSTACK_KEYSTONE_URL = "http://%s:5000/v3" % OPENSTACK_HOST
ALLOWED_HOSTS = ["*"]
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                      "LOCATION": "$CONTROLLER_HOST:11211"}}
OPENSTACK_KEYSTONE_DEFAULT_DOMAIN = "Default"
OPENSTACK_KEYSTONE_DEFAULT_ROLE = "member"
WEBROOT = "$DASHBOARD_WEBROOT"
CONF
# Horizon in Python's main interpreter: cryptography's Rust module (PyO3) loads only once per
# process, so in a second sub-interpreter every page was a 500 ("PyO3 modules ... may only be
# initialized once per interpreter process", seen on Debian 13). RDO's site file says it itself.
if [ -n "$DASHBOARD_WSGI_CONF" ]; then
    write_file "$DASHBOARD_WSGI_CONF" 0644 <<'CONF'
WSGIApplicationGroup %{GLOBAL}
CONF
fi
# Debian's openstack-dashboard-apache, left to serve Horizon under /horizon on the default site,
# enables default-ssl.conf too, without mod_ssl: Apache then refuses to start (SSLEngine is an
# invalid command). The dashboard does not need that site; the profile names such sites.
for site in $HTTPD_SITES_OFF; do
    if [ -L "$ROOT$site" ]; then
        rm -f "$ROOT$site"
        CHANGED=1
        say "disabled $site"
    fi
done
restart_if_changed "$UNIT_HTTPD"
