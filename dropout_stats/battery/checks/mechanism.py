"""mechanism: the kept set is the backend's reference stream thresholded, bit for bit.

Detects an implementation that draws another uniform than the framework's own (another seed
derivation, another generator, another stream under XLA), even when every statistic is right.
Only this check catches: ``corpus.swapped_seed`` (seed components swapped: a perfectly good
mask, but not the one the framework's seed promises).
Test: exact (no false-fail rate): the first two main masks (seeds (s, 0) and (s, 1): a swap of
the components shows in one of them) and the noise-shape probe's first units against
``reference_keep(shape, seed, dtype, rate)`` of the backend's stream; when they differ and match
the backend's other stream instead (TensorFlow's XLA stream), the detail says so.  Not
applicable to the stateful contract or with reference=None: threshold_nesting and
threshold_flips carry the proof there.  Tested in tests/test_verify.py.
"""

from __future__ import annotations

import numpy as np

from ...report import Check, Finding
from . import Family


class Mechanism(Family):
    name = "mechanism"
    names = ("mechanism",)
    observes = frozenset({"probe"})  # its first call; and the stored main masks
    late = True

    def __init__(self, run):
        super().__init__(run)
        self.check = None
        self.probe = None

    def on_call(self, call) -> None:
        if call.purpose == "probe" and call.index == 0:
            self.probe = call

    def after_main(self) -> None:
        cfg, run = self.cfg, self.run
        if cfg.stateful:
            self.check = Check(
                "mechanism",
                None,
                detail="stateful contract: no seed to reproduce the uniform; the "
                "threshold structure shows in the rate and scale checks",
            )
            return
        if cfg.reference is None:
            self.check = Check(
                "mechanism",
                None,
                detail="reference=None: the implementation has its own RNG; "
                "threshold_nesting and threshold_flips carry the proof",
            )
            return
        backend, ref = run.backend, cfg.reference
        other_ref = backend.other_reference(ref)
        n_check = min(2, len(run.stored_masks))
        masks = [(run.unit_shape, run.seed_pair(i), run.stored_masks[i]) for i in range(n_check)]
        if self.probe is not None:
            masks.append((self.probe.mask.shape, self.probe.seed, self.probe.mask))

        def differ(stream):
            return sum(
                int(np.count_nonzero(backend.reference_keep(shape, seed, cfg.dtype, cfg.rate, stream) != got))
                for shape, seed, got in masks
            )

        mismatches, total = differ(ref), sum(got.size for _, _, got in masks)
        cfg.samples += total
        detail = ""
        for variant in backend.variants(ref, cfg.dtype) if mismatches else ():
            if differ(variant) == 0:  # a stream as documented (TensorFlow's float32 uniform): bit for bit
                text = backend.reference_text(variant, cfg.dtype)
                run.later(
                    run.findings.append,
                    Finding(
                        "stream", f"{cfg.dtype} input, mask {text}: the uniform in float32, not {cfg.dtype}", variant
                    ),
                )
                ref, mismatches = variant, 0
                break
        if mismatches:
            detail = f"{mismatches:,} of {total:,} positions differ from {backend.reference_text(ref, cfg.dtype)}"
            # the other stream is named only if every compared mask is that stream's, all of it
            if other_ref is not None and differ(other_ref) == 0:
                detail += "; " + backend.stream_note(ref, other_ref)
                run.later(
                    run.findings.append,
                    Finding("xla_stream", detail, "xla" if other_ref == "tensorflow-xla" else "eager"),
                )
        self.check = Check(
            "mechanism",
            mismatches == 0,
            samples=total,
            observed=f"{mismatches} mismatches",
            values={"mismatches": mismatches, "compared": total},
            expected=f"kept == {backend.reference_text(ref, cfg.dtype)}, bit for bit",
            detail=detail,
            reproduce=cfg.reproduce(f"seed pairs {[list(seed) for _, seed, _ in masks]}"),
        )

    def conclude(self):
        return [self.check]
