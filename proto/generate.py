"""Generate the Python stubs of tollgate.v1 from the .proto files beside this script.

Run by setup.py on every build (and by hand: `python proto/generate.py`). The stubs are written
next to the .proto files, carry protoc's "DO NOT EDIT" banner and are ignored by git.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent


def _include_dirs() -> list[str]:
    """Where protoc finds google/protobuf/*.proto and google/api/*.proto."""
    import grpc_tools

    dirs = [str(Path(grpc_tools.__file__).parent / "_proto")]
    try:
        import google.api.field_behavior_pb2 as field_behavior  # googleapis-common-protos

        dirs.append(str(Path(field_behavior.__file__).parents[2]))
    except ImportError:  # pragma: no cover - a dependency of grpcio-status
        pass
    return dirs


def generate() -> None:
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("tollgate/**/*.proto"))
    args = ["protoc", f"-I{PROTO_ROOT}", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--python_out={PROTO_ROOT}", f"--pyi_out={PROTO_ROOT}", f"--grpc_python_out={PROTO_ROOT}"]
    if protoc.main(args + sources) != 0:
        raise SystemExit(f"protoc failed on {sources}")


if __name__ == "__main__":
    generate()
    sys.exit(0)
