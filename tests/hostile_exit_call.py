"""Ends the interpreter at import (tests/hostile.py)."""

exit(4)  # the builtin, as a careless plugin calls it
