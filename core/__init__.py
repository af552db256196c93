"""The floor every app may import: errors, events, pagination, query helpers, shared view and admin bases.

It imports no app (tests/test_layers.py).
"""
