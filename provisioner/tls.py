"""TLS for the API port: the CA the first-boot runners pin, and the service's certificate.

The configuration a node fetches at first boot holds its steps' secrets, and its step reports
carry their output: where the site's service URL is https, the API speaks TLS and every kickstart
installs the CA that signed its certificate, which the runner pins (curl --cacert). Without an
operator's certificate (`serve --tls-cert/--tls-key`, and `service.tls_ca` in the site for the CA
that signed it), the service makes its own CA in the state directory on first use and issues
itself a certificate for the service URL's host. The boot port stays plain HTTP: firmware and
installers cannot pin a CA, and nothing secret travels there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path
from urllib.parse import urlparse

TLS_DIR = "tls"
CA_DAYS = 3650
CERT_DAYS = 397         # what browsers accept; it is issued again well before it ends
RENEW_BEFORE = datetime.timedelta(days=30)


class TlsError(ValueError):
    pass


def is_https(url: str) -> bool:
    return urlparse(url).scheme == "https"


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def ensure_ca(state_dir: Path) -> Path:
    """The service's own CA (made on first use): its certificate's path; the key stays 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(state_dir) / TLS_DIR
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = d / "ca.pem", d / "ca.key"
    if cert_path.exists() and key_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provisioner CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "provisioner")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path


def ensure_server_cert(state_dir: Path, names: list[str]) -> tuple[Path, Path]:
    """A certificate from the service's CA for these host names and addresses, issued again
    when the names change or it nears its end."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert_path = ensure_ca(state_dir)
    d = ca_cert_path.parent
    cert_path, key_path = d / "server.pem", d / "server.key"
    names = sorted(set(n for n in names if n))
    if not names:
        raise TlsError("no host name or address to issue the service's certificate for")
    sans = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    if cert_path.exists() and key_path.exists():
        old = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            have = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            have = None
        if have is not None and set(have) == set(sans) and old.not_valid_after_utc - _now() > RENEW_BEFORE:
            return cert_path, key_path
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot load the TLS certificate {cert} and key {key}: {e}") from None
    return ctx


def ca_pem(site, state_dir: Path) -> str | None:
    """The CA every kickstart installs for its runner to pin, when the API is HTTPS."""
    if not is_https(site.service_url):
        return None
    path = Path(site.tls_ca) if site.tls_ca else ensure_ca(state_dir)
    try:
        text = path.read_text()
    except OSError as e:
        raise TlsError(f"service.tls_ca: cannot read {path}: {e}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise TlsError(f"service.tls_ca: {path} holds no PEM certificate")
    return text if text.endswith("\n") else text + "\n"


def api_context(site, state_dir: Path, cert: Path | None, key: Path | None,
                extra_names: tuple[str, ...] = ()) -> ssl.SSLContext | None:
    """What the API port speaks: TLS when the service URL is https (the operator's certificate,
    or one from the service's CA for the URL's host), plain HTTP otherwise."""
    if not is_https(site.service_url):
        if cert or key:
            raise TlsError("--tls-cert/--tls-key given, but service.url is not https: the kickstarts "
                           "would send the runners to plain HTTP")
        return None
    if bool(cert) != bool(key):
        raise TlsError("--tls-cert and --tls-key go together")
    if cert is None:
        if site.tls_ca:
            raise TlsError("service.tls_ca names the operator's CA: give the certificate it signed "
                           "with --tls-cert/--tls-key")
        host = urlparse(site.service_url).hostname
        cert, key = ensure_server_cert(state_dir, [host, *extra_names])
    return server_context(cert, key)
