"""Reliability suite: crashes, faults, bad input and secrets (`pytest --long` for the full size)."""
