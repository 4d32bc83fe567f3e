"""The gRPC surface: interceptors (errors, authentication and permissions, request checks), the per-call
context, paging and the filter language, field mapping and validation, and the servicers (api/servicers/)."""
