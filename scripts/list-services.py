"""List the gRPC services a tollgate control service exposes, through server reflection (like `grpcurl list`).

    python3 scripts/list-services.py                  # services, one per line
    python3 scripts/list-services.py --methods        # and their methods with request/response types
    python3 scripts/list-services.py --address 127.0.0.1:50051

The address and TLS settings are tollgate-admin's (admin/config.py): $TOLLGATE_ADDRESS, then `address` in
~/.config/tollgate/admin.toml, then 127.0.0.1:50051; TLS with that file's ca_file (and client certificate),
plaintext only with --plaintext or TOLLGATE_PLAINTEXT=1. Reflection needs no token. Any python3 works: without
grpc installed it re-runs itself with the repository's .venv/bin/python.
"""

from __future__ import annotations

import argparse
import os
import sys
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

sys.path.insert(0, str(REPO))
from admin import config  # noqa: E402  (after the re-exec above: it needs grpc)


def main() -> int:
    parser = argparse.ArgumentParser(description="List the services of a gRPC server through reflection.")
    parser.add_argument("--address", help="host:port (default: as tollgate-admin)")
    parser.add_argument("--plaintext", action="store_true", help="no TLS, for a server configured so")
    parser.add_argument("--methods", action="store_true", help="also list each service's methods")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the server")
    args = parser.parse_args()
    settings = config.resolve(args.address, None, None, plaintext=args.plaintext)

    with config.open_channel(settings) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            print(f"list-services: no gRPC server answers on {settings.address}", file=sys.stderr)
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
