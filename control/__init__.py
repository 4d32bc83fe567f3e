"""gRPC control service: PostgreSQL is the system of record; projects the fast path's data into Redis."""
