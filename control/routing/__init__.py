"""Routing as the switch sees it, for operators: the route simulator (simulator.py decides, report.py explains)."""
