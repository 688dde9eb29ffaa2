#!/bin/bash
# Report (34) 15-glance-init-db.sh; here only into an empty database.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'glance'")" = 0 ]; then
    su -s /bin/sh -c "glance-manage db_sync" glance
fi
