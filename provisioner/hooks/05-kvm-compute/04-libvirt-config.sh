#!/bin/bash
# Report (14) 04-libvirt-config.sh let anyone reach libvirt over TCP without authentication.
# Here TCP listens on the local network's address only and asks for a SASL password (SCRAM);
# the migration user's password comes from the service, and Nova reads it from auth.conf.
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

write_file /etc/sasl2/libvirt.conf 0644 <<'CONF'
mech_list: scram-sha-256
sasldb_path: /etc/libvirt/passwd.db
CONF
ini_set /etc/libvirt/virtproxyd.conf "" auth_tcp '"sasl"'
write_file /etc/systemd/system/virtproxyd-tcp.socket.d/listen.conf 0644 <<CONF
[Socket]
ListenStream=
ListenStream=$NODE_IP:16509
CONF
if ! sasldblistusers2 -f /etc/libvirt/passwd.db 2>/dev/null | grep -q '^migration@'; then
    printf '%s' "$LIBVIRT_MIGRATION_PASSWORD" | saslpasswd2 -p -a libvirt -f /etc/libvirt/passwd.db migration
fi
write_file /etc/libvirt/auth.conf 0600 <<CONF
[credentials-migration]
authname=migration
password=$LIBVIRT_MIGRATION_PASSWORD

[auth-libvirt-default]
credentials=migration
CONF
if [ "$CHANGED" = 1 ]; then
    systemctl daemon-reload
fi
restart_if_changed virtproxyd-tcp.socket
