"""Who calls and what they did: principals, tokens and passwords, account sessions and login throttling,
operators with roles, the audit log, and TLS for the gRPC port."""
