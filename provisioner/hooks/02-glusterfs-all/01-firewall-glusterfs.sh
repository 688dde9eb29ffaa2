#!/bin/bash
# Report (4) 01-iptables-flush.sh opened every port by flushing iptables.
# Here only GlusterFS's ports, in the install network's zone. Not firewalld's service
# `glusterfs`: glusterfs-server ships it, and it is installed two steps later (INVALID_SERVICE).
# The ports are those of gluster's own service file (extras/firewalld/glusterfs.xml): glusterd
# and its RDMA management port, and the bricks' range; not Gluster-NFS, which is not used.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

firewall_allow 24007-24008/tcp 49152-49664/tcp
