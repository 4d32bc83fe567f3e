"""Per-call decision core (rating, CLI pool, localization, LCR, authorization); built in issue 4."""
