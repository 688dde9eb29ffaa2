#!/bin/bash
# Report (48) 04-nova-config.sh copied the controller's nova.conf. Here the compute side only:
# KVM when the CPU has vmx or svm (else plain QEMU), live migration over libvirt's TLS socket
# on the local network (05-kvm-compute/04-libvirt-config says why TLS), and the 2025.1 guide's
# [service_user].
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

conf=/etc/nova/nova.conf
if grep -qwE 'vmx|svm' "$ROOT/proc/cpuinfo"; then virt_type=kvm; else virt_type=qemu; fi
ini_set "$conf" DEFAULT enabled_apis "osapi_compute,metadata"
ini_set "$conf" DEFAULT transport_url "rabbit://openstack:$RABBITMQ_PASSWORD@$CONTROLLER_HOST"
ini_set "$conf" DEFAULT my_ip "$NODE_IP"
ini_set "$conf" DEFAULT instances_path "$INSTANCES_DIR"
ini_set "$conf" api auth_strategy keystone
keystone_authtoken "$conf" nova "$NOVA_PASSWORD"
ini_set "$conf" vnc enabled true
ini_set "$conf" vnc server_listen 0.0.0.0
# shellcheck disable=SC2016  # nova.conf's own variable, written literally
ini_set "$conf" vnc server_proxyclient_address '$my_ip'
ini_set "$conf" vnc novncproxy_base_url "http://$CONTROLLER_HOST:6080/vnc_auto.html"
# one console protocol: Debian's nova.conf enables SPICE as well, which its QEMU is built
# without ("spice graphics are not supported with this QEMU": no VM could be defined)
ini_set "$conf" spice enabled false
ini_set "$conf" glance api_servers "http://$CONTROLLER_HOST:9292"
ini_set "$conf" oslo_concurrency lock_path /var/lib/nova/tmp
nova_service_sections "$conf"
nova_service_user "$conf"
ini_set "$conf" libvirt virt_type "$virt_type"
# a package's own compute configuration, read after nova.conf, names the hypervisor too
# (Debian's nova-compute-kvm: virt_type=kvm, which cannot start without hardware virtualisation)
if [ -n "$NOVA_COMPUTE_CONF" ]; then
    ini_set "$NOVA_COMPUTE_CONF" libvirt virt_type "$virt_type"
fi
ini_set "$conf" libvirt live_migration_scheme tls
ini_set "$conf" libvirt live_migration_inbound_addr "$NODE_IP"
restart_if_changed "$UNIT_NOVA_COMPUTE"
# Where this node's cgroup controllers are mounted read-only (a container on a cgroup v1 host),
# libvirt cannot make a VM's cgroup and refuses to start it ("Failed to create v1 controller
# cpu for group: Read-only file system"): it is told to use none. Nothing on a real host.
if awk '$3 == "cgroup" && $4 ~ /(^|,)ro(,|$)/ { found = 1 } END { exit !found }' "$ROOT/proc/mounts" 2>/dev/null; then
    CHANGED=0
    kv_set /etc/libvirt/qemu.conf cgroup_controllers "[ ]"
    restart_if_changed "${LIBVIRT_SOCKETS//.socket/}"
fi
