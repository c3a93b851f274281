"""Numbers, sizes, rates and times as a person reads them; ``-`` for a missing value."""

from __future__ import annotations

import time

MISSING = "-"
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_IEC = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def number(x: float | None) -> str:
    """Three significant digits with an SI suffix: ``999``, ``1.23k``, ``45.6M``, ``0.5``."""
    if x is None:
        return MISSING
    for scale, suffix in _SI:
        if abs(x) >= scale * 0.9995:
            return f"{_sig3(x / scale)}{suffix}"
    return _sig3(x)


def _sig3(x: float) -> str:
    if x == int(x) and abs(x) < 1000:
        return str(int(x))
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


def count(n: int | float | None) -> str:
    """A counter on a compact surface: exact below 1,000, then ``1.23k``, ``4.18M``
    (one format for the whole column: never ``892145`` beside ``4.18M``)."""
    if n is None:
        return MISSING
    return number(n)


def exact(n: int | float | None) -> str:
    """A counter in full, digits grouped: ``25,912,345``."""
    if n is None:
        return MISSING
    return f"{n:,}" if n == int(n) else f"{n:,.2f}"


def rate(per_second: float | None) -> str:
    """``1.2M/s``, ``340/s``, ``0.5/s``."""
    if per_second is None:
        return MISSING
    return f"{number(per_second)}/s"


def size(n: int | float | None) -> str:
    """Bytes with a binary suffix: ``512 B``, ``3.4 MiB``."""
    if n is None:
        return MISSING
    for scale, suffix in _IEC:
        if abs(n) >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{int(n)} B"


def percent(part: float | None, whole: float | None) -> str:
    """``part`` of ``whole``: ``12.3%``, ``0%``, ``<0.1%``; ``-`` when ``whole`` is 0."""
    if part is None or not whole:
        return MISSING
    value = 100.0 * part / whole
    if value == 0:
        return "0%"
    if 0 < value < 0.1:
        return "<0.1%"
    return f"{value:.1f}%"


def micros(us: float | None) -> str:
    """A latency in microseconds: ``850 us``, ``1.2 ms``, ``3.4 s``."""
    if us is None:
        return MISSING
    if us >= 1e6:
        return f"{us / 1e6:.3g} s"
    if us >= 1e3:
        return f"{us / 1e3:.3g} ms"
    return f"{us:.3g} us"


def duration(seconds: float | None) -> str:
    """``4.2s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    if seconds is None:
        return MISSING
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    minutes, sec = divmod(int(s), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def clock(at: float | None, *, millis: bool = False) -> str:
    """A unix time in local time: ``2024-05-01 12:00:03`` (``.123`` with ``millis``)."""
    if at is None:
        return MISSING
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    if millis:
        text += f".{int((at % 1) * 1000):03d}"
    return text
