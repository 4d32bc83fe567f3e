"""Generated gRPC stubs of the tollgate control API (see proto/generate.py)."""
