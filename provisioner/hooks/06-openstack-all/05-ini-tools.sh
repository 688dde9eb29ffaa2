#!/bin/bash
# Not in the report: crudini, which edits every OpenStack INI file from here on (lib/common.sh's
# ini_set). After the RDO repository: on CentOS crudini comes from it.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_INI"
