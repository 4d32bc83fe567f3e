"""tollgate-admin: the operator's command-line client of the gRPC control API."""
