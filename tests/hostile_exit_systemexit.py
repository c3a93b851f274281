"""Ends the interpreter at import (tests/hostile.py)."""

raise SystemExit(3)
