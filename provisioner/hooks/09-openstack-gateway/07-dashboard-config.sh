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
restart_if_changed "$UNIT_HTTPD"
