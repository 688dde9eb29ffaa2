#!/bin/bash
# Report (17) 02-ntp-install.sh installed ntpd. chronyd replaces it.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_CHRONY"
