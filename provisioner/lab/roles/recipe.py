"""What the roles lab's root contains: the suite, the packages and the debconf answers.

Everything here feeds the cache key (rootfs.cache_key): change it and the next `up` builds a
new root instead of reusing one that no longer matches.
"""

from __future__ import annotations

from dataclasses import dataclass

SUITE = "trixie"

# systemd as PID 1 and enough to reach the service; debootstrap installs these itself, so a
# root that cannot boot fails in the first minute, not after the long apt run.
BOOT = ("systemd", "systemd-sysv", "dbus", "iproute2", "ca-certificates")

# What every node has, whatever its roles (the site's `packages` and the runner's tools); their
# services stay enabled, as a CentOS minimal install enables chronyd and firewalld.
COMMON = ("curl", "python3", "crudini", "firewalld", "chrony", "procps", "iputils-ping")

# What the role steps install on Debian 13. Their services are disabled in the root: one root
# serves every node, and a compute node must not boot MariaDB and neutron-server because the
# controller needs them. The steps enable what their node's roles need, as they do on CentOS,
# whose packages install services disabled.
ROLES = (
    # GlusterFS
    "glusterfs-server", "glusterfs-client", "xfsprogs",
    # controller infrastructure
    "mariadb-server", "python3-pymysql", "rabbitmq-server", "memcached",
    "apache2", "libapache2-mod-wsgi-py3",
    # OpenStack control plane
    "keystone", "glance", "placement-api",
    "nova-api", "nova-conductor", "nova-scheduler", "nova-novncproxy",
    "neutron-server", "neutron-l3-agent", "neutron-dhcp-agent", "neutron-metadata-agent",
    "cinder-api", "cinder-scheduler", "openstack-dashboard", "python3-openstackclient",
    # Horizon's Apache site (PKGS_DASHBOARD): openstack-dashboard alone serves nothing
    "openstack-dashboard-apache",
    # compute (KVM) and its networking
    "nova-compute", "qemu-system-x86", "libvirt-daemon-system",
    # live migration's SASL (SCRAM inside TLS): the mechanism plug-ins are only a Recommends of
    # libsasl2-2, and saslpasswd2 is in sasl2-bin
    "libsasl2-modules", "sasl2-bin",
    "neutron-openvswitch-agent", "openvswitch-switch",
)

# Debian's OpenStack packages offer to create their databases, Keystone users and endpoints,
# and RabbitMQ settings at install time; the role steps do all of that, against the real
# controller, so every such offer is declined here.
PRESEED = """\
dbconfig-common dbconfig-common/dbconfig-install boolean false
keystone keystone/configure_db boolean false
keystone keystone/create-admin-tenant boolean false
keystone keystone/register-endpoint boolean false
glance-common glance/configure_db boolean false
glance-common glance/configure_ksat boolean false
glance-common glance/configure_rabbit boolean false
glance-api glance/configure_api-endpoint boolean false
placement-common placement/configure_db boolean false
placement-common placement/configure_ksat boolean false
placement-api placement/configure_api-endpoint boolean false
nova-common nova/configure_db boolean false
nova-common nova/configure_ksat boolean false
nova-common nova/configure_rabbit boolean false
nova-common nova/configure_neutron boolean false
nova-common nova/configure_placement boolean false
nova-api nova/configure_api-endpoint boolean false
nova-api novaapi/configure_db boolean false
nova-consoleproxy nova-consoleproxy/daemon_type select novnc
neutron-common neutron/configure_db boolean false
neutron-common neutron/configure_ksat boolean false
neutron-common neutron/configure_rabbit boolean false
neutron-common neutron/configure_nova boolean false
neutron-api neutron/configure_api-endpoint boolean false
neutron-metadata-agent neutron-metadata/configure boolean false
cinder-common cinder/configure_db boolean false
cinder-common cinder/configure_ksat boolean false
cinder-common cinder/configure_rabbit boolean false
cinder-api cinder/configure_api-endpoint boolean false
"""


@dataclass(frozen=True)
class Recipe:
    suite: str
    boot: tuple[str, ...]
    common: tuple[str, ...]
    roles: tuple[str, ...]
    preseed: str

    @property
    def name(self) -> str:
        return "full" if self.roles else "base"


# "base" boots and networks like a node but has none of the roles' software: minutes to build,
# for working on the substrate itself. "full" is what the role steps run on.
RECIPES = {
    "base": Recipe(SUITE, BOOT, COMMON, (), PRESEED),
    "full": Recipe(SUITE, BOOT, COMMON, ROLES, PRESEED),
}
