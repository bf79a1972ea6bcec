"""count_dispersion: placeholder, being written (issue 29)."""

from __future__ import annotations

from . import Family


class CountDispersion(Family):
    name = "count_dispersion"
    names = ()

    def applies(self) -> bool:
        return False
