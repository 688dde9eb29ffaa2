#!/bin/bash
# Report (39) 20-nova-install.sh installed all of Nova (and Qpid) on the controller.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_NOVA_CONTROLLER"
