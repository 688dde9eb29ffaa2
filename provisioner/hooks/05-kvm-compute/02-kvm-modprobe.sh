#!/bin/bash
# Report (12) 02-kvm-modprobe.sh loaded kvm-intel unless you edited it for AMD.
# Here the CPU flags decide: vmx loads kvm_intel, svm kvm_amd; neither means Nova falls back to
# plain QEMU (08-openstack-compute/03-nova-config reads the same flags).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if grep -qw vmx "$ROOT/proc/cpuinfo"; then
    module=kvm_intel
elif grep -qw svm "$ROOT/proc/cpuinfo"; then
    module=kvm_amd
else
    skip "no vmx or svm CPU flag: no hardware virtualisation to load a module for; Nova will use plain QEMU"
fi
printf 'kvm\n%s\n' "$module" | write_file /etc/modules-load.d/kvm.conf 0644
if ! lsmod | grep -q "^$module "; then
    modprobe "$module"
fi
