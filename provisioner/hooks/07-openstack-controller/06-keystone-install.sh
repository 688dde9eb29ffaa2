#!/bin/bash
# Report (23) 04-keystone-install.sh: Keystone, now served by Apache (mod_wsgi).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_KEYSTONE"
