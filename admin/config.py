"""Where the address and token come from: flag > environment > config file > built-in default."""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from admin.errors import UsageError

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_CONFIG = Path("~/.config/tollgate/admin.toml")
ENV_ADDRESS = "TOLLGATE_ADDRESS"
ENV_TOKEN = "TOLLGATE_TOKEN"
ENV_CONFIG = "TOLLGATE_ADMIN_CONFIG"


@dataclass(frozen=True)
class Settings:
    address: str
    token: str | None


def _env(name: str) -> str | None:
    # An exported-but-empty variable is a common shell accident; treat it as unset, not as "".
    return os.environ.get(name) or None


def load_config(path: Path, required: bool) -> dict[str, str]:
    """Read `address` and `token` from a TOML file; a missing default file is simply no config."""
    try:
        with path.expanduser().open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise UsageError(f"config file not found: {path}") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    config: dict[str, str] = {}
    for key in ("address", "token"):
        if key in data:
            if not isinstance(data[key], str):
                raise UsageError(f"config file {path}: {key} must be a string")
            config[key] = data[key]
    return config


def resolve(address: str | None, token: str | None, config_file: str | None) -> Settings:
    """Apply the precedence; the file is read only when a flag or variable did not already decide."""
    address = address or _env(ENV_ADDRESS)
    token = token or _env(ENV_TOKEN)
    explicit = config_file or _env(ENV_CONFIG)
    config: dict[str, str] = {}
    if explicit or address is None or token is None:
        # A file the user named must exist; the default one is optional.
        config = load_config(Path(explicit) if explicit else DEFAULT_CONFIG, required=bool(explicit))
    return Settings(
        address=address or config.get("address") or DEFAULT_ADDRESS,
        token=token or config.get("token"),
    )
