#!/bin/bash
# Report (11) 01-kvm-install.sh: yum install kvm qemu-kvm qemu-kvm-tools.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_KVM"
