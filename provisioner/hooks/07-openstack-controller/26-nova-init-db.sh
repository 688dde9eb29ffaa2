#!/bin/bash
# Report (43) 24-nova-init-db.sh ran nova-manage db sync. Here the API database, cell0 and cell1
# mappings and the cell database, each only once.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'nova_api'")" = 0 ]; then
    su -s /bin/sh -c "nova-manage api_db sync" nova
fi
cells=$(su -s /bin/sh -c "nova-manage cell_v2 list_cells" nova)
if ! printf '%s\n' "$cells" | grep -q ' cell0 '; then
    su -s /bin/sh -c "nova-manage cell_v2 map_cell0" nova
fi
if ! printf '%s\n' "$cells" | grep -q ' cell1 '; then
    su -s /bin/sh -c "nova-manage cell_v2 create_cell --name=cell1" nova
fi
if [ "$(mysql -N -e "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'nova'")" = 0 ]; then
    su -s /bin/sh -c "nova-manage db sync" nova
fi
