#!/bin/bash
# Report (13) 03-libvirt-install.sh also started avahi and messagebus.
# Here only libvirt's KVM driver and client; D-Bus runs anyway and avahi is not needed.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

pkg_install libvirt-daemon-kvm libvirt-client cyrus-sasl-scram
