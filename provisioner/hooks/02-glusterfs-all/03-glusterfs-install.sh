#!/bin/bash
# Report (6) 03-glusterfs-install.sh installed GlusterFS 3.3 RPMs by URL.
# Here the CentOS Storage SIG's packages (the kickstart installed most; this fills gaps).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_GLUSTER"
