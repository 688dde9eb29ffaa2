#!/bin/bash
# Report (33) 14-glance-config.sh edited glance-api.conf and glance-registry.conf; the registry
# is gone. Images are files on vg_images' lv_images (Table 2) at /var/lib/glance/images.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

conf=/etc/glance/glance-api.conf
ini_set "$conf" database connection "mysql+pymysql://glance:$GLANCE_DB_PASSWORD@$CONTROLLER_HOST/glance"
keystone_authtoken "$conf" glance "$GLANCE_PASSWORD"
ini_set "$conf" paste_deploy flavor keystone
ini_set "$conf" DEFAULT enabled_backends "fs:file"
ini_set "$conf" glance_store default_backend fs
ini_set "$conf" fs filesystem_store_datadir "$GLANCE_DIR/"
restart_if_changed "$UNIT_GLANCE_API"
