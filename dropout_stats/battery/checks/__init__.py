"""The battery's checks, one module per family, and the one list that names them.

A family is a small class with hooks the runner calls (in the spirit of pytest's hook
specifications); every hook has a default, so a family overrides only what it uses:

=================  ==============  =============================================================
hook               thread          what it does
=================  ==============  =============================================================
``applies()``      caller          whether this configuration gets the family at all
``statistical()``  caller          its entries that take a share of the false-fail budget
``before_main()``  caller          calls it needs that do not depend on a main mask (``run.call``)
``more()``         caller          whether the main sequence needs another call (minimum sizes)
``on_call(call)``  caller          after every call; cheap (the sequential test lives here)
``stored(masks)``  caller          the stored main masks are complete: work on them goes to
                                   ``run.later`` and runs alongside the remaining main calls
``after_main()``   caller          calls or reference draws that need the main masks
``observe(call)``  worker          each call whose purpose is in ``observes``: accumulate
``conclude()``     worker          its ``Check`` entries (and findings), after those calls
=================  ==============  =============================================================

``observes`` names the call purposes it reads ("main", "seed_repeat", "seed_other", "seed_far", "long",
"threshold", "probe", "backward"); a family that reads only "main" concludes while the calls after the
main sequence run (unless ``late``: a family that makes its verdict in ``after_main``).

Every call is evidence: a call at the configured rate whose seed no other call used is
``fresh`` and feeds the sequential rate test, whatever family asked for it; every call's kept
values go through the scale check at that call's rate.
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
    late = False  # concludes after the extra calls even if it observes none of them

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

    def before_main(self) -> None:
        pass

    def more(self) -> bool:
        return False

    def on_call(self, call) -> None:
        pass

    def stored(self, masks: list) -> None:
        pass

    def after_main(self) -> None:
        pass

    def observe(self, call) -> None:
        pass

    def conclude(self) -> list[Check]:
        return []


def _families():
    from .backward import Backward
    from .call_independence import CallIndependence
    from .correlation import Correlation
    from .dispersion import CountDispersion
    from .homogeneity import Homogeneity
    from .keep_fraction import KeepFraction
    from .long_range import LongRange
    from .mechanism import Mechanism
    from .noise_shape import NoiseShape
    from .pairs import Pairs
    from .scale import Scale
    from .seeds import Seeds
    from .threshold import Threshold
    from .value_independence import ValueIndependence

    return [
        KeepFraction,
        Mechanism,
        Threshold,
        Scale,
        Backward,
        Seeds,
        Pairs,
        Homogeneity,
        ValueIndependence,
        CallIndependence,
        CountDispersion,
        LongRange,
        Correlation,
        NoiseShape,
    ]


FAMILIES = _families()
