#!/bin/bash
# Report (25) 06-keystone-generate-admin-token.sh made a shared admin token. Keystone now signs
# tokens with Fernet keys; there is no admin token to leak.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

if [ ! -f "$ROOT/etc/keystone/fernet-keys/0" ]; then
    keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
fi
if [ ! -f "$ROOT/etc/keystone/credential-keys/0" ]; then
    keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
fi
