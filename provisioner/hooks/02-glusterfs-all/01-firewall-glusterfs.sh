#!/bin/bash
# Report (4) 01-iptables-flush.sh opened every port by flushing iptables.
# Here only GlusterFS's ports, in the install network's zone. Not firewalld's service
# `glusterfs`: glusterfs-server ships it, and it is installed two steps later (INVALID_SERVICE).
# glusterd's ports are those of gluster's service file (extras/firewalld/glusterfs.xml): 24007
# and its RDMA management port 24008; not Gluster-NFS, which is not used. The bricks' range is
# glusterd.vol's, not the file's 49152-49664: since GlusterFS 10 glusterd gives each brick a
# random port from base-port 49152 to max-port 60999 (the lab's bricks got 52960 and 60884).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

firewall_allow 24007-24008/tcp 49152-60999/tcp
