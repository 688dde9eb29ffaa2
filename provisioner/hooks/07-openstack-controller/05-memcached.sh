#!/bin/bash
# Not in the report: the services cache Keystone tokens in memcached.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_MEMCACHED"
# shellcheck disable=SC2059  # the format is the profile's: how this OS's memcached is told where to listen
line_in_file "$MEMCACHED_CONF" "$MEMCACHED_LISTEN_REGEX" "$(printf -- "$MEMCACHED_LISTEN_FORMAT" "127.0.0.1,::1,$NODE_IP")"
restart_if_changed "$UNIT_MEMCACHED"
service_on "$UNIT_MEMCACHED"
firewall_allow 11211/tcp
