#!/bin/bash
# Report (25) 06-keystone-generate-admin-token.sh made a shared admin token. Keystone now signs
# tokens with Fernet keys; there is no admin token to leak.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

# keystone-manage logs to keystone.log. Run here as root before any run as keystone, it would
# create that file root's, and db_sync (as keystone, next) and Keystone itself could not log.
log=/var/log/keystone/keystone.log
if [ ! -e "$ROOT$log" ]; then
    mkdir -p "$(dirname "$ROOT$log")"
    : > "$ROOT$log"
    chown keystone:keystone "$ROOT$log"
fi
if [ ! -f "$ROOT/etc/keystone/fernet-keys/0" ]; then
    keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone
fi
if [ ! -f "$ROOT/etc/keystone/credential-keys/0" ]; then
    keystone-manage credential_setup --keystone-user keystone --keystone-group keystone
fi
