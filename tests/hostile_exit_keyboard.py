"""Ends the interpreter at import (tests/hostile.py)."""

raise KeyboardInterrupt
