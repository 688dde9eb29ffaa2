#!/bin/bash
# Report (31) 12-glance-install.sh.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_GLANCE"
