#!/bin/bash
# Report (14) 04-libvirt-config.sh let anyone reach libvirt over TCP without authentication.
# Here migration goes over libvirt's TLS socket (16514), bound to the install network's address,
# with a SASL password (SCRAM) inside TLS. Not the plain TCP socket: libvirt refuses a SASL
# mechanism without a security layer there, and SCRAM has none (libvirt.org/auth.html); only
# GSSAPI or the broken DIGEST-MD5 would pass. The certificates come from a per-cluster CA whose
# key every compute host derives from the migration secret the service sends only to compute
# hosts: no new secret to hand out, and each host signs its own certificate (its name and IP).
# shellcheck source=../lib/common.sh
. "$(dirname "$0")/../lib/common.sh"

write_file /etc/sasl2/libvirt.conf 0644 <<'CONF'
mech_list: scram-sha-256
sasldb_path: /etc/libvirt/passwd.db
CONF
# libvirt's daemon configuration has no sections: plain `key = value` lines
kv_set "$LIBVIRT_REMOTE_CONF" auth_tls '"sasl"'
# FreeBind: the socket binds the install address before the network is up at boot
write_file "/etc/systemd/system/$LIBVIRT_TLS_SOCKET.d/listen.conf" 0644 <<CONF
[Socket]
ListenStream=
ListenStream=$NODE_IP:16514
FreeBind=yes
CONF
# libvirtd looks the user up in its host's SASL realm, the host's canonical name: the fully
# qualified one the cluster's hosts file (01-network-gateway/03-hosts) lists first. saslpasswd2's
# default realm can be the bare host name ("user not found: unable to canonify user").
realm=$NODE_HOSTNAME${DOMAIN:+.$DOMAIN}
if ! sasldblistusers2 -f /etc/libvirt/passwd.db 2>/dev/null | grep -qxF "migration@$realm: userPassword"; then
    printf '%s' "$LIBVIRT_MIGRATION_PASSWORD" | saslpasswd2 -p -a libvirt -u "$realm" -f /etc/libvirt/passwd.db migration
fi
write_file /etc/libvirt/auth.conf 0600 <<CONF
[credentials-migration]
authname=migration
password=$LIBVIRT_MIGRATION_PASSWORD

[auth-libvirt-default]
credentials=migration
CONF
pki="$ROOT/etc/pki"
if [ ! -s "$pki/CA/cacert.pem" ] || [ ! -s "$pki/libvirt/servercert.pem" ] || [ ! -s "$pki/libvirt/private/serverkey.pem" ]; then
    mkdir -p "$pki/CA" "$pki/libvirt/private"
    chmod 0700 "$pki/libvirt/private"
    # the secret by environment, not argv, where any local user's ps would see it
    MIGRATION_CA_SEED="$LIBVIRT_MIGRATION_PASSWORD" python3 - "$pki" "$NODE_HOSTNAME" "$NODE_IP" <<'PY'
import datetime, hashlib, ipaddress, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pki, host, ip = sys.argv[1:4]
# P-256's group order: the derived scalar must lie in [1, n-1]
n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
seed = hashlib.sha256(b"provisioner libvirt migration CA\0" + os.environ["MIGRATION_CA_SEED"].encode()).digest()
ca_key = ec.derive_private_key(int.from_bytes(seed, "big") % (n - 1) + 1, ec.SECP256R1())
ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provisioner live-migration CA")])
ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
# fixed fields: every compute host's copy of the CA certificate names the same key and subject
ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
      .serial_number(1).not_valid_before(datetime.datetime(2025, 1, 1)).not_valid_after(datetime.datetime(2045, 1, 1))
      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
      .add_extension(ski, critical=False)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256()))


def put(rel, data, mode):
    path = os.path.join(pki, rel)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


pem = serialization.Encoding.PEM
key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
put("CA/cacert.pem", ca.public_bytes(pem), 0o644)
for role in ("server", "client"):     # one certificate: this host serves and is a client
    put(f"libvirt/{role}cert.pem", cert.public_bytes(pem), 0o644)
    put(f"libvirt/private/{role}key.pem", key_pem, 0o600)
PY
    CHANGED=1
    say "wrote the migration certificates under /etc/pki"
fi
if [ "$CHANGED" = 1 ]; then
    systemctl daemon-reload
fi
restart_if_changed "$LIBVIRT_TLS_SOCKET"
