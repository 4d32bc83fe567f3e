"""The executable specification of the fast path: plain Python, readable, and slow.

fastpath/_core.pyx must decide exactly as this package does; tests/test_fastpath_differential.py
checks that on generated worlds and calls.
"""
