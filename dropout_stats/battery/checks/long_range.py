"""long_range: placeholder, being written (issue 29)."""

from __future__ import annotations

from . import Family


class LongRange(Family):
    name = "long_range"
    names = ()

    def applies(self) -> bool:
        return False
