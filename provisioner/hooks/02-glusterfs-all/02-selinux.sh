#!/bin/bash
# Report (5) 02-selinux-permissive.sh made SELinux permissive for VM migration.
# Here SELinux stays enforcing; QEMU gets the boolean it needs to use images on the
# GlusterFS FUSE mount.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if ! getsebool virt_use_fusefs | grep -q -- '--> on$'; then
    setsebool -P virt_use_fusefs on
fi
