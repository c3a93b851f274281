"""Mechanism plugins: the contract in :mod:`labd.mechanisms.base`, one module per built-in."""
