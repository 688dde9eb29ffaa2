#!/bin/bash
# Report (13) 03-libvirt-install.sh also started avahi and messagebus.
# Here only libvirt's KVM driver and client, SASL's SCRAM and python3-cryptography (the migration
# certificates, 04-libvirt-config); D-Bus runs anyway and avahi is not needed.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install "$PKGS_LIBVIRT"
