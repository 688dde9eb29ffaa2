#!/bin/bash
# Report (27) 08-keystone-init-db.sh ran db_sync; here only into an empty database.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'keystone'")" = 0 ]; then
    su -s /bin/sh -c "keystone-manage db_sync" keystone
fi
