#!/bin/bash
# Report (54) 05-dashboard-install.sh: Horizon, on the gateway as in the report.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_DASHBOARD"
