"""List the gRPC services a tollgate control service exposes, through server reflection (like `grpcurl list`).

    python3 scripts/list-services.py                  # services, one per line
    python3 scripts/list-services.py --methods        # and their methods with request/response types
    python3 scripts/list-services.py --address 127.0.0.1:50051

The address defaults to $TOLLGATE_ADDRESS, then `address` in ~/.config/tollgate/admin.toml, then
127.0.0.1:50051. Reflection needs no token. Any python3 works: without grpc installed it re-runs itself with
the repository's .venv/bin/python.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

try:
    import grpc
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except ImportError:
    venv = REPO / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), __file__, *sys.argv[1:]])
    raise


def default_address() -> str:
    if os.environ.get("TOLLGATE_ADDRESS"):
        return os.environ["TOLLGATE_ADDRESS"]
    config = Path(os.environ.get("TOLLGATE_ADMIN_CONFIG") or "~/.config/tollgate/admin.toml").expanduser()
    try:
        with config.open("rb") as f:
            return str(tomllib.load(f).get("address") or "127.0.0.1:50051")
    except (OSError, tomllib.TOMLDecodeError):
        return "127.0.0.1:50051"


def main() -> int:
    parser = argparse.ArgumentParser(description="List the services of a gRPC server through reflection.")
    parser.add_argument("--address", default=default_address(), help="host:port (default: %(default)s)")
    parser.add_argument("--methods", action="store_true", help="also list each service's methods")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    args = parser.parse_args()

    with grpc.insecure_channel(args.address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            print(f"list-services: no gRPC server answers on {args.address}", file=sys.stderr)
            return 1
        database = ProtoReflectionDescriptorDatabase(channel)
        try:
            services = sorted(database.get_services())
        except grpc.RpcError as exc:
            print(f"list-services: reflection failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        pool = DescriptorPool(database)
        for name in services:
            print(name)
            if args.methods:
                for method in pool.FindServiceByName(name).methods:
                    stream_in = "stream " if method.client_streaming else ""
                    stream_out = "stream " if method.server_streaming else ""
                    print(
                        f"  rpc {method.name}({stream_in}{method.input_type.full_name})"
                        f" returns ({stream_out}{method.output_type.full_name})"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
