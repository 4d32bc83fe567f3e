"""The configuration model (SPEC §3, §6, §7): a generic resource engine (engine.py) driven by the catalog of
resources (resources.py), and rate deck imports (decks.py)."""
