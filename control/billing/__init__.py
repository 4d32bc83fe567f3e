"""Money after the call (SPEC §9, §10): the ledger (Redis streams into PostgreSQL), CDRs, payments, invoices."""
