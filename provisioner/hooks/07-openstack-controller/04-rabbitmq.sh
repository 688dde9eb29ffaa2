#!/bin/bash
# The report's services talked over Qpid. RabbitMQ is RDO's message queue today.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_RABBITMQ"
service_on "$UNIT_RABBITMQ"
if ! rabbitmqctl -q list_users | awk '{ print $1 }' | grep -qx openstack; then
    rabbitmqctl add_user openstack "$RABBITMQ_PASSWORD"
fi
if ! rabbitmqctl -q list_user_permissions openstack | grep -q '^/'; then
    rabbitmqctl set_permissions openstack ".*" ".*" ".*"
fi
firewall_allow 5672/tcp
