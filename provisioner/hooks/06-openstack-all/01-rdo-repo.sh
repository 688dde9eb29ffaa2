#!/bin/bash
# Report (16) 01-epel-add-repo.sh added EPEL for OpenStack packages.
# Here RDO's release package for the site's OpenStack release (the kickstart installed it).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "centos-release-openstack-$OPENSTACK_RELEASE"
