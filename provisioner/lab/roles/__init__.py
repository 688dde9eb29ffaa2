"""The roles lab: the registry's nodes as Debian 13 (trixie) system containers on one host, for
rehearsing the first-boot role steps (GlusterFS, KVM, OpenStack) for real.

One root is built with debootstrap and cached (rootfs), every node boots it read-only under its
own overlay (containers), and all their NICs live in network namespaces made for the lab
(netns). Substrate ties them together for `provisioner lab roles` and the tests.

What a container cannot do here, as the role steps will find (measured on this host's kernel):
  - Open vSwitch: no openvswitch module, so a kernel-datapath bridge fails; a userspace one
    (datapath_type=netdev) works, which Neutron's OVS agent can be told to use.
  - Block devices: no loop devices inside (mount -o loop fails) and no device-mapper on the
    host, so no LVM. lv_gluster (XFS at /export/gluster on compute hosts) is an XFS file system
    on a sparse file the lab loop-mounts on the host and binds in (containers.make_brick).
  - CAP_SYS_TIME is withheld (the containers share the host's clock), so chrony's unit would be
    skipped (ConditionCapability); the chrony step runs chronyd with -x there: it tracks its
    sources and serves time, and never sets the clock.
  - No vmx/svm CPU flag here: the KVM module step is skipped and libvirt runs QEMU under TCG.
"""

from provisioner.lab.roles.substrate import Substrate, SubstrateError

__all__ = ["Substrate", "SubstrateError"]
