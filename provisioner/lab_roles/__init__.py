"""The roles lab: the registry's nodes as Debian 13 (trixie) system containers on one host, for
rehearsing the first-boot role steps (GlusterFS, KVM, OpenStack) for real.

One root is built with debootstrap and cached (rootfs), every node boots it read-only under its
own overlay (containers), and all their NICs live in network namespaces made for the lab
(netns). Substrate ties them together for `provisioner lab roles` and the tests.
"""

from provisioner.lab_roles.substrate import Substrate, SubstrateError

__all__ = ["Substrate", "SubstrateError"]
