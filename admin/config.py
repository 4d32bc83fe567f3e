"""Where the address, token and TLS settings come from: flag > environment > config file > built-in default.

TLS is the default: the server is verified against `ca_file` (else the system's CAs), and with `cert_file`
and `key_file` the CLI shows a client certificate (mutual TLS). Plaintext only when asked for
(`--plaintext`, TOLLGATE_PLAINTEXT=1 or `plaintext = true`).
"""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import grpc

from admin.errors import UsageError

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_CONFIG = Path("~/.config/tollgate/admin.toml")
ENV_ADDRESS = "TOLLGATE_ADDRESS"
ENV_TOKEN = "TOLLGATE_TOKEN"
ENV_CONFIG = "TOLLGATE_ADMIN_CONFIG"
ENV_CA_FILE = "TOLLGATE_CA_FILE"
ENV_CERT_FILE = "TOLLGATE_CERT_FILE"
ENV_KEY_FILE = "TOLLGATE_KEY_FILE"
ENV_PLAINTEXT = "TOLLGATE_PLAINTEXT"
_STRING_KEYS = ("address", "token", "ca_file", "cert_file", "key_file")


@dataclass(frozen=True)
class Settings:
    address: str
    token: str | None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    plaintext: bool = False


def _env(name: str) -> str | None:
    # An exported-but-empty variable is a common shell accident; treat it as unset, not as "".
    return os.environ.get(name) or None


def _env_flag(name: str) -> bool | None:
    value = _env(name)
    if value is None:
        return None
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise UsageError(f"{name} must be 1/0, true/false or yes/no, not {value!r}")
    return value.lower() in ("1", "true", "yes")


def load_config(path: Path, required: bool) -> dict[str, object]:
    """Read the settings from a TOML file; a missing default file is simply no config."""
    try:
        with path.expanduser().open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file not found: {path}") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    config: dict[str, object] = {}
    for key in _STRING_KEYS:
        if key in data:
            if not isinstance(data[key], str):
                raise UsageError(f"config file {path}: {key} must be a string")
            config[key] = data[key]
    if "plaintext" in data:
        if not isinstance(data["plaintext"], bool):
            raise UsageError(f"config file {path}: plaintext must be true or false")
        config["plaintext"] = data["plaintext"]
    return config


def resolve(address: str | None, token: str | None, config_file: str | None, *, ca_file: str | None = None,
            cert_file: str | None = None, key_file: str | None = None, plaintext: bool = False) -> Settings:
    """Apply the precedence, key by key (a file the user named must exist; the default one is optional)."""
    explicit = config_file or _env(ENV_CONFIG)
    config = load_config(Path(explicit) if explicit else DEFAULT_CONFIG, required=bool(explicit))

    def pick(flag: str | None, env: str, key: str) -> str | None:
        return flag or _env(env) or config.get(key)  # type: ignore[return-value]

    env_plaintext = _env_flag(ENV_PLAINTEXT)
    return Settings(
        address=pick(address, ENV_ADDRESS, "address") or DEFAULT_ADDRESS,
        token=pick(token, ENV_TOKEN, "token"),
        ca_file=pick(ca_file, ENV_CA_FILE, "ca_file"),
        cert_file=pick(cert_file, ENV_CERT_FILE, "cert_file"),
        key_file=pick(key_file, ENV_KEY_FILE, "key_file"),
        plaintext=plaintext or (env_plaintext if env_plaintext is not None else bool(config.get("plaintext"))),
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def open_channel(settings: Settings) -> grpc.Channel:
    """A TLS channel (with the client certificate when one is configured), or plaintext when asked for."""
    if settings.plaintext:
        return grpc.insecure_channel(settings.address)
    if bool(settings.cert_file) != bool(settings.key_file):
        raise UsageError("a client certificate needs both cert_file and key_file")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(settings.ca_file, "CA file") if settings.ca_file else None,
        private_key=_read(settings.key_file, "client key") if settings.key_file else None,
        certificate_chain=_read(settings.cert_file, "client certificate") if settings.cert_file else None,
    )
    return grpc.secure_channel(settings.address, credentials)
