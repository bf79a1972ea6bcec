"""The battery's checks, one module per family, and the one list that names them.

A family is a small class with hooks the runner calls (in the spirit of pytest's hook
specifications); every hook has a default, so a family overrides only what it uses:

=================  ==============  =============================================================
hook               thread          what it does
=================  ==============  =============================================================
``applies()``      caller          whether this configuration gets the family at all
``statistical()``  caller          its entries that take a share of the false-fail budget
``more()``         caller          whether the main sequence needs another call (minimum sizes)
``on_main(call)``  caller          after each main call; cheap (the sequential test lives here)
``after_main()``   caller          extra calls (``run.call``) or reference draws it needs
``observe(call)``  worker          each call whose purpose is in ``observes``: accumulate
``conclude()``     worker          its ``Check`` entries (and findings), after those calls
=================  ==============  =============================================================

``observes`` names the call purposes it reads ("main", "seed_repeat", "seed_other",
"threshold", "probe"); a family that reads only "main" concludes while the extra calls run
(unless ``late``: a family that makes its verdict in ``after_main``).
``needs`` names shared tallies the runner keeps ("per_position": kept count per position over
the main calls).  Report order is the order of ``FAMILIES``.

To add a check: write a module here whose docstring says what it detects, a broken
implementation of the corpus that only it catches, its test and its error rates; then add
its class to ``FAMILIES``.
"""
from __future__ import annotations

from ...report import Check


class Family:
    name = "family"
    names: tuple = ()
    observes: frozenset = frozenset({"main"})
    needs: frozenset = frozenset()
    late = False          # concludes after the extra calls even if it observes none of them

    @property
    def concludes_late(self) -> bool:
        return self.late or bool(self.observes - {"main"})

    def __init__(self, run):
        self.run = run
        self.cfg = run.cfg

    def applies(self) -> bool:
        return True

    def statistical(self) -> list[str]:
        return []

    def more(self) -> bool:
        return False

    def on_main(self, call) -> None:
        pass

    def after_main(self) -> None:
        pass

    def observe(self, call) -> None:
        pass

    def conclude(self) -> list[Check]:
        return []


def _families():
    from .call_independence import CallIndependence
    from .homogeneity import Homogeneity
    from .keep_fraction import KeepFraction
    from .mechanism import Mechanism
    from .noise_shape import NoiseShape
    from .offset_independence import OffsetIndependence
    from .pairs import Pairs
    from .scale import Scale
    from .seeds import Seeds
    from .stateful import Stateful
    from .threshold import Threshold
    from .unbiasedness import Unbiasedness
    from .value_independence import ValueIndependence

    return [KeepFraction, Mechanism, Threshold, Scale, Unbiasedness, Seeds, Pairs, Homogeneity,
            ValueIndependence, CallIndependence, OffsetIndependence, NoiseShape, Stateful]


FAMILIES = _families()
