"""Extended key usage: labd serves only client certificates made for a client
(``clientAuth``), and labctl trusts only a labd certificate made for a server
(``serverAuth``), as ``labd tls init`` issues them. OpenSSL alone takes a certificate
without the extension as good for any purpose; these certificates are made here, signed
by the test's own CA, to prove both sides refuse them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemonkit import DaemonFactory
from helpers import free_port
from test_tls import Pki, assert_one_line_error, labctl, new_pki, status_json

from labctl.tls import SERVER_AUTH, extended_key_usages

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    yield from new_pki()


def without_eku(pki: Pki, name: str, hosts: tuple[str, ...] = ()) -> tuple[str, str]:
    """A certificate and key signed by ``pki``'s CA like labd tls init's, but with no
    extended key usage at all; written beside the CA. Returns (cert path, key path)."""
    ca = x509.load_pem_x509_certificate(Path(pki.ca_crt).read_bytes())
    ca_key = serialization.load_pem_private_key(Path(pki.ca_key).read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ipclab"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
    )
    if hosts:
        sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = pki.dir / f"{name}.crt", pki.dir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def der(path: str) -> bytes:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_labctls_reading_of_extended_key_usage_agrees_with_cryptography(pki: Pki) -> None:
    server = extended_key_usages(der(pki.server_crt))
    client = extended_key_usages(der(pki.client_crt))
    assert server is not None and SERVER_AUTH in server
    assert client is not None and SERVER_AUTH not in client and len(client) == 1
    assert extended_key_usages(der(without_eku(pki, "bare")[0])) is None
    assert extended_key_usages(der(pki.ca_crt)) is None


def test_a_client_certificate_without_client_auth_is_refused(
    labd_factory: DaemonFactory, pki: Pki
) -> None:
    port = free_port()
    d = labd_factory(("--listen", f"127.0.0.1:{port}", *pki.labd_args()))
    address = f"127.0.0.1:{port}"
    cert, key = without_eku(pki, "no-usage client")
    done = labctl(address, cert, key, pki.ca_crt, "status", "--json")
    text = assert_one_line_error(done, 3)
    assert "does not accept this certificate" in text and "clientAuth" in text, text
    assert "labd tls init" in text
    log = d.log_text()
    assert "certificate not accepted" in log and "CN=no-usage client" in log, log
    # and those it issues still get in
    assert (
        status_json(labctl(address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json"))
        == []
    )


def test_labctl_refuses_a_labd_certificate_without_server_auth(
    labd_factory: DaemonFactory, pki: Pki
) -> None:
    cert, key = without_eku(pki, "no-usage server", ("localhost",))
    port = free_port()
    labd_factory(
        (
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            pki.ca_crt,
        )
    )
    done = labctl(f"localhost:{port}", pki.client_crt, pki.client_key, pki.ca_crt, "status")
    text = assert_one_line_error(done, 3)
    assert "labd's TLS certificate is not accepted" in text and "serverAuth" in text, text
