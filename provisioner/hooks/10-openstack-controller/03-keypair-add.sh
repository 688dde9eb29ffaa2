#!/bin/bash
# Report (59) 03-keypair-add.sh added a key pair for SSH into VMs, after booting the VM it was for.
# Here before the VM boots (02-boot-cirros; plan.yaml runs this step first, the files keep the report's numbers), which is when Nova injects it.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

admin_env
if [ ! -f "$ROOT/root/.ssh/id_ed25519" ]; then
    mkdir -p "$ROOT/root/.ssh"
    ssh-keygen -q -t ed25519 -N '' -f "$ROOT/root/.ssh/id_ed25519"
fi
if ! openstack_exists keypair test-key; then
    openstack keypair create --public-key "$ROOT/root/.ssh/id_ed25519.pub" test-key
fi
