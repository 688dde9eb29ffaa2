#!/bin/bash
# Report (16) 01-epel-add-repo.sh added EPEL for OpenStack packages.
# Here RDO's release package for the site's OpenStack release (the kickstart installed it), and
# what RDO's install guide asks for besides: the CRB repository enabled on the installed system
# (the kickstart's CRB was the installer's only), and openstack-selinux, whose policy lets the
# services (httpd on Keystone's 5000 and Placement's 8778 among them) run under enforcing SELinux.
# Only on profiles with RDO (SKIP_STEPS).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_REPO_TOOLS"
enabled=$(dnf -q repolist --enabled | awk 'NR > 1 { print $1 }')
for repo in $REQUIRED_REPOS; do
    if ! printf '%s\n' "$enabled" | grep -qx "$repo"; then
        dnf config-manager --set-enabled "$repo"
    fi
done
pkg_install "centos-release-openstack-$OPENSTACK_RELEASE"
pkg_install "$PKGS_SELINUX"
