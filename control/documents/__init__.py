"""Documents: the PDF invoices and receipts (SPEC §10), and what they print of the issuer and the account."""
