"""Experiments: the same measurement run on several cases inside labd, interleaved,
stored, with sound statistics (see :mod:`labd.experiments.core`)."""

from __future__ import annotations
