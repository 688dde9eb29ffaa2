#!/bin/bash
# Report (15) 05-libvirt-start.sh restarted libvirtd. CentOS Stream 9 runs libvirt as modular
# daemons, started by their sockets.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

service_on virtqemud.socket virtproxyd.socket virtproxyd-tcp.socket
firewall_allow 16509/tcp
