#!/bin/bash
# Report (46) 02-install-nova.sh installed all of Nova on each compute host; only
# nova-compute is needed there. The runner starts it once the controller's services are up.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_NOVA_COMPUTE"
