#!/bin/bash
# Report (28) 09-keystone-permissions.sh fixed file ownership for the admin token. keystone-manage
# bootstrap now creates the admin user, project, roles, service and endpoints, once.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(mysql -N -e "SELECT COUNT(*) FROM keystone.project WHERE name = 'admin'")" = 0 ]; then
    # the password by environment, not argv, where any local user's ps would see it
    OS_BOOTSTRAP_PASSWORD="$KEYSTONE_ADMIN_PASSWORD" keystone-manage bootstrap \
        --bootstrap-admin-url "http://$CONTROLLER_HOST:5000/v3/" \
        --bootstrap-internal-url "http://$CONTROLLER_HOST:5000/v3/" \
        --bootstrap-public-url "http://$CONTROLLER_HOST:5000/v3/" \
        --bootstrap-region-id RegionOne
fi
