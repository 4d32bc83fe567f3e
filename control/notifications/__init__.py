"""E-mail notifications: the outbox in PostgreSQL (outbox.py), the messages (compose.py) and the sender thread
(sender.py)."""
