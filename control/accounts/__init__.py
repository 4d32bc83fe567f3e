"""Accounts (SPEC §2): customers and providers on one list, their fields and CSV export, SIP digests, and the
company profile."""
