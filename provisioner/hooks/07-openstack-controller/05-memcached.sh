#!/bin/bash
# Not in the report: the services cache Keystone tokens in memcached.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install memcached python3-memcached
line_in_file /etc/sysconfig/memcached '^OPTIONS=' "OPTIONS=\"-l 127.0.0.1,::1,$NODE_IP\""
restart_if_changed memcached
service_on memcached
firewall_allow 11211/tcp
