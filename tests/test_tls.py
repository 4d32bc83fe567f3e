"""TLS and mutual TLS on the gRPC port (SPEC §11, issue 10 finding 9), with the private CA that
scripts/start-stack.sh makes (control/access/tls.py), for the service and for tollgate-admin."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from control.access import tls
from control.config import Config
from control.server import create_server
from tests.helpers import clean_env, ok, run_cli, stubs_for
from tollgate.v1 import company_pb2


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    written = tls.ensure_pki(directory)
    assert set(written) == {"ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"}
    assert tls.ensure_pki(directory) == []  # kept, never rotated by a rerun
    assert oct((directory / "server.key").stat().st_mode & 0o777) == "0o600"
    return directory


@pytest.fixture(scope="module")
def stranger_pki(tmp_path_factory) -> Path:
    """Another CA, its server and client certificates: trusted by nobody here."""
    directory = tmp_path_factory.mktemp("stranger")
    tls.ensure_pki(directory)
    return directory


def _credentials(ca: Path | None, client: Path | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=(client / "client.key").read_bytes() if client else None,
        certificate_chain=(client / "client.pem").read_bytes() if client else None)


def _healthy(address: str, credentials: grpc.ChannelCredentials | None) -> bool:
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def tls_server(server_factory, pki):
    return server_factory(plaintext=False, tls_cert_file=str(pki / "server.pem"),
                          tls_key_file=str(pki / "server.key"))


@pytest.fixture(scope="module")
def mtls_server(server_factory, pki):
    return server_factory(plaintext=False, tls_cert_file=str(pki / "server.pem"),
                          tls_key_file=str(pki / "server.key"), tls_client_ca_file=str(pki / "ca.pem"))


def test_tls_serves_clients_that_trust_the_ca(tls_server, pki, stranger_pki):
    assert _healthy(tls_server.address, _credentials(pki / "ca.pem"))
    for name in ("localhost", "127.0.0.1"):  # both are in the server certificate
        address = tls_server.address.replace("127.0.0.1", name)
        with grpc.secure_channel(address, _credentials(pki / "ca.pem")) as channel:
            company = stubs_for(channel, tls_server.admin_token).company.GetCompany(
                company_pb2.GetCompanyRequest(), metadata=(("authorization", f"Bearer {tls_server.admin_token}"),))
            assert company.currency
    assert not _healthy(tls_server.address, None)  # a plaintext client gets nowhere
    assert not _healthy(tls_server.address, _credentials(stranger_pki / "ca.pem"))  # nor one that trusts another CA


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_server, pki, stranger_pki):
    assert _healthy(mtls_server.address, _credentials(pki / "ca.pem", client=pki))
    assert not _healthy(mtls_server.address, _credentials(pki / "ca.pem"))
    assert not _healthy(mtls_server.address, _credentials(pki / "ca.pem", client=stranger_pki))
    assert not _healthy(mtls_server.address, None)


def test_without_tls_the_service_does_not_start_unless_plaintext_is_configured(control_server):
    config = Config(listen="127.0.0.1:0", dsn=control_server.dsn, redis_url=control_server.redis_url)
    with pytest.raises(SystemExit, match="no TLS configured"):
        create_server(config)
    with pytest.raises(SystemExit, match="both tls_cert_file and tls_key_file"):
        create_server(dataclasses.replace(config, tls_cert_file="/nonexistent.pem"))


def test_the_cli_uses_tls_and_a_client_certificate_by_default(mtls_server, pki, tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "tollgate").mkdir(parents=True)
    settings = (f'address = "{mtls_server.address}"\ntoken = "{mtls_server.admin_token}"\n'
                f'ca_file = "{pki / "ca.pem"}"\n')
    (home / ".config" / "tollgate" / "admin.toml").write_text(
        settings + f'cert_file = "{pki / "client.pem"}"\nkey_file = "{pki / "client.key"}"\n')
    (tmp_path / "no-cert.toml").write_text(settings)
    env = clean_env(home)
    del env["TOLLGATE_PLAINTEXT"]
    assert "currency" in ok(run_cli(["company", "get"], env))
    plaintext = run_cli(["--plaintext", "--timeout", "3", "company", "get"], env)
    assert plaintext.returncode == 7 and "UNAVAILABLE" in plaintext.stderr
    no_cert = run_cli(["--config", str(tmp_path / "no-cert.toml"), "--timeout", "3", "company", "get"], env)
    assert no_cert.returncode == 7 and "UNAVAILABLE" in no_cert.stderr
