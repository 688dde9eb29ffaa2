#!/bin/bash
# Report (15) 05-libvirt-start.sh restarted libvirtd. The profile names libvirt's sockets
# (CentOS Stream 9's modular daemons, or Debian's libvirtd), started by socket activation.
# Opened in the install network's zone: libvirt's TLS socket, and QEMU's migration ports
# (qemu.conf's migration_port_min..max, 49152-49215), which the memory stream uses directly.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on "$LIBVIRT_SOCKETS" "$LIBVIRT_TLS_SOCKET"
firewall_allow 16514/tcp 49152-49215/tcp
