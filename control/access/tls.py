"""TLS for the gRPC port: the server's credentials, and a small private CA for a stack that has none.

`python -m control.access.tls DIR [--host NAME ...]` writes, when missing, a private CA (`ca.pem`, `ca.key`), a server
certificate for 127.0.0.1, ::1 and localhost plus the given hosts (`server.pem`, `server.key`) and an operator
client certificate (`client.pem`, `client.key`), keys mode 600. scripts/start-stack.sh runs it and points the
service and tollgate-admin at the files. Existing files are kept, so rerunning never rotates anything.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from control.config import Config

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers and most clients accept for a leaf certificate
DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")


def server_credentials(config: Config) -> grpc.ServerCredentials:
    """TLS with the configured certificate; with a client CA, mutual TLS: a client without a certificate
    signed by it is refused during the handshake, before any RPC."""
    try:
        key = Path(config.tls_key_file).read_bytes()
        chain = Path(config.tls_cert_file).read_bytes()
        client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    except OSError as exc:
        raise SystemExit(f"cannot read a TLS file: {exc}") from None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


# ---------------------------------------------------------------------------------------------- a private CA


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    cert_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tollgate"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str = "tollgate private CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue(ca: Issued, common_name: str, hosts: tuple[str, ...] = (), client: bool = False) -> Issued:
    """A leaf certificate signed by `ca`: for a server (hosts become its subject alternative names) or a client."""
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_pair(directory: Path, stem: str, issued: Issued) -> None:
    _write(directory / f"{stem}.key", issued.key_pem, private=True)
    _write(directory / f"{stem}.pem", issued.cert_pem, private=False)


def _read_pair(directory: Path, stem: str) -> Issued | None:
    key, cert = directory / f"{stem}.key", directory / f"{stem}.pem"
    if key.is_file() and cert.is_file():
        return Issued(key.read_bytes(), cert.read_bytes())
    return None


def ensure_pki(directory: Path, hosts: tuple[str, ...] = (), client_name: str = "operator") -> list[str]:
    """Make what is missing of ca/server/client in `directory`; the names of the files written."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    written = []
    ca = _read_pair(directory, "ca")
    if ca is None:
        ca = make_ca()
        _write_pair(directory, "ca", ca)
        written += ["ca.pem", "ca.key"]
    if _read_pair(directory, "server") is None:
        _write_pair(directory, "server", issue(ca, "tollgate-control", (*DEFAULT_HOSTS, *hosts)))
        written += ["server.pem", "server.key"]
    if _read_pair(directory, "client") is None:
        _write_pair(directory, "client", issue(ca, client_name, client=True))
        written += ["client.pem", "client.key"]
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="make a private CA, a server and an operator client certificate")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--host", action="append", default=[], help="another name or address of the server")
    parser.add_argument("--client-name", default="operator", help="the client certificate's common name")
    args = parser.parse_args(argv)
    for name in ensure_pki(args.directory, tuple(args.host), args.client_name):
        print(args.directory / name)


if __name__ == "__main__":
    main()
