"""Making labd's certificates with ``cryptography``: a CA of its own that signs one
server certificate (for the hosts clients use) and one client certificate. P-256 keys,
SHA-256 signatures, unencrypted PKCS#8 keys (the files are 0600; see labd.tls)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labd.tls import Host

_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ipclab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
        ]
    )


def _usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(_USAGES, False)
    flags.update(on)
    return x509.KeyUsage(**flags)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issuer:
    """A new CA, and the certificates it signs, all valid from ``start`` to ``end``."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def new(cls, first_host: str, start: dt.datetime, end: dt.datetime) -> Issuer:
        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        # a name of its own: verifiers look issuers up by name, and two CAs made for the
        # same host must not be mistaken for each other ("unable to get local issuer")
        name = _name(f"ipclab CA {ski.digest[:4].hex()} for {first_host}")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert, start, end)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def server(self, hosts: Sequence[Host]) -> tuple[bytes, bytes]:
        """(certificate, key) PEM for a server reached as any of ``hosts``."""
        sans: list[x509.GeneralName] = [
            x509.DNSName(h) if isinstance(h, str) else x509.IPAddress(h) for h in hosts
        ]
        return self._leaf(str(hosts[0]), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def client(self) -> tuple[bytes, bytes]:
        """(certificate, key) PEM for a client."""
        return self._leaf("ipclab client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _leaf(
        self, common: str, purpose: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start)
            .not_valid_after(self.end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)
