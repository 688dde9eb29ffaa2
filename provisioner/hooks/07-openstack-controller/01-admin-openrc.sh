#!/bin/bash
# Report (20) 01-source-configrc.sh asked you to source config/configrc. Every step here
# reads the service's rendered config.env; this writes the admin credentials for people.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

write_file /root/admin-openrc 0600 <<CONF
export OS_USERNAME=admin
export OS_PASSWORD='$KEYSTONE_ADMIN_PASSWORD'
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_AUTH_URL=http://$CONTROLLER_HOST:5000/v3
export OS_IDENTITY_API_VERSION=3
CONF
