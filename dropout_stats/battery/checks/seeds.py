"""seed_determinism and seed_independence: the seed decides the mask, all of it.

Detects a seed component ignored (every call with the same seed[0] draws one mask), the two
components mixed into one number ((s + 1, i) collides with (s, i + 1)), and hidden state
(the same seed gives another output on the second call).
Only these catch: ``corpus.mixes_seed`` (seed[0] + seed[1] as one number: (s + 1, i) draws
(s, i + 1)'s mask; each call alone is a good mask).
Tests: seed_determinism is exact (two calls with seed (s + 3, 0) on the input's first rows,
compared bit for bit);
seed_independence is Fisher's exact test on the 2 x 2 tables of masks from neighbouring seeds
((s, i) against (s, i + 1), (s + 1, i), and (s + 1, i) against (s, i + 1)), Bonferroni over the
three, in the run's Holm family.  Stateless contract only.  Tested in tests/test_verify.py.
"""

from __future__ import annotations

import numpy as np

from ...report import Check
from . import Family
from ._common import accumulate_table, fisher


class Seeds(Family):
    name = "seeds"
    names = ("seed_determinism", "seed_independence")
    observes = frozenset({"seed_repeat", "seed_other"})

    def __init__(self, run):
        super().__init__(run)
        self.repeats, self.others = [], []

    def applies(self) -> bool:
        return not self.cfg.stateful

    def statistical(self):
        return ["seed_independence"]

    def before_main(self) -> None:
        run, cfg = self.run, self.cfg
        # (s, i) vs (s, i + 1); (s, i) vs (s + 1, i); (s + 1, i) vs (s, i + 1): catches a seed
        # component ignored, or the two components mixed into one number
        for i in range(min(run.store_limit, cfg.max_calls) - 1):
            run.call("seed_other", cfg.rate, run.seed_pair(i, offset=1), cfg.noise_shape, index=i, fresh=True)
        # determinism on a small input: the same seed twice
        x, x_np, ns = run.small_input()
        for i in range(2):
            run.call("seed_repeat", cfg.rate, run.seed_pair(0, offset=3), ns, x=x, x_np=x_np, index=i, fresh=i == 0)

    def more(self) -> bool:
        return self.run.main_calls < self.run.store_limit  # every seed_other call gets its partners

    def observe(self, call) -> None:
        (self.repeats if call.purpose == "seed_repeat" else self.others).append(call)

    def conclude(self):
        return [self.determinism(), self.independence()]

    def determinism(self) -> Check:
        cfg, run = self.cfg, self.run
        y0, y0b = (c.y for c in self.repeats)
        uint = run.fmt.uint
        same = np.array_equal(y0.view(uint), y0b.view(uint))
        return Check(
            "seed_determinism",
            same,
            samples=2 * y0.size,
            observed="identical" if same else "different outputs",
            expected="the same seed gives the same output",
            detail="" if same else f"two calls with seed {list(run.seed_pair(0, offset=3))} differ",
            reproduce=cfg.reproduce(
                f"fn(x[:{y0.shape[0]}], {cfg.rate}, seed={list(run.seed_pair(0, offset=3))}) twice"
            ),
        )

    def independence(self) -> Check:
        cfg = self.cfg
        stored = self.run.stored_masks
        tables = [np.zeros(4, dtype=np.int64) for _ in range(3)]
        for i in range(len(stored) - 1):
            accumulate_table(tables[0], stored[i], stored[i + 1])
        for i, c in enumerate(self.others[: len(stored) - 1]):
            accumulate_table(tables[1], stored[i], c.mask)
            accumulate_table(tables[2], stored[i + 1], c.mask)
        results = [fisher(t) for t in tables]
        labels = ["seed[1] + 1", "seed[0] + 1", "(seed[0] + 1, i) against (seed[0], i + 1)"]
        worst = int(np.argmin([r[0] for r in results]))
        p = min(1.0, min(r[0] for r in results) * 3)  # Bonferroni over the three comparisons
        return Check(
            "seed_independence",
            True,
            "statistical",
            p,
            None,
            int(sum(t[3] for t in tables)),
            values={"agreement": results[worst][1], "expected": cfg.keep**2 + (1 - cfg.keep) ** 2},
            observed=f"agreement {results[worst][1]:.6g} ({labels[worst]})",
            expected=f"{cfg.keep**2 + (1 - cfg.keep) ** 2:.6g} = p^2 + q^2 (independent masks)",
            detail=f"Fisher exact on the 2x2 tables of masks from neighbouring seeds; smallest p at {labels[worst]}",
            reproduce=cfg.reproduce(),
        )
