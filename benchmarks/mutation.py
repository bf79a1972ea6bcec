"""Mutation testing of the statistics layer (and any module named): does a test notice each
single-point change of the code?

For every module, each mutation is one AST edit (a comparison flipped: < <= > >= == !=; an
arithmetic operator swapped: + - * / // **; and/or swapped; a unary minus dropped; an integer
constant +-1 and a float constant x2; True/False swapped), written into a scratch git worktree
of HEAD, and that module's own test files run there (pytest -x, PYTHONPATH at the worktree, so
the installed package is not touched).  A mutant is killed when a test fails or errors.  Each
survivor is printed with its line; the ones known to be equivalent are listed in EQUIVALENT
with the reason, and the score leaves them out.

Run: python benchmarks/mutation.py [--jobs N] [--sample P] [--survivors-of LOG] [--battery | module ...]
By default the statistics layer, one worker per core, each in its own worktree; the time is
printed at the end.  Not part of CI: it needs the machine to itself.  A module's slow tests run
in a second pytest call, only for the mutants the fast ones did not kill.  --battery takes the
battery's check modules, whose tests run verify() (32 to 43 s for one unmutated pass on 2 cores):
--sample P runs a seeded random share P of the mutants and prints the score's exact 95% interval;
--sample-seed S draws another such sample (a fresh one measures the score after tests were written
against an earlier sample's survivors).  --tests T... is a screen, not a score: every mutant against
these tests alone (say the battery's recomputed ones, 19 s), its survivors then re-run with the
module's own tests through --survivors-of.
"""

from __future__ import annotations

import ast
import copy
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# module -> the tests that cover it (the fast ones: no full verify() runs)
TESTS = {
    "dropout_stats/_checks.py": ["tests/test_checks.py"],
    "dropout_stats/_exact.py": ["tests/test_exact.py"],
    "dropout_stats/_floats.py": ["tests/test_precision.py", "tests/test_backends.py"],
    "dropout_stats/binomial.py": ["tests/test_binomial.py"],
    "dropout_stats/design.py": ["tests/test_design.py", "tests/test_sequential.py"],
    "dropout_stats/precision.py": ["tests/test_precision.py", "tests/test_backends.py"],
    "dropout_stats/sequential.py": ["tests/test_sequential.py"],
    "dropout_stats/structure.py": ["tests/test_structure.py"],
    "dropout_stats/counts.py": ["tests/test_counts.py"],
    "dropout_stats/battery/checks/correlation.py": ["tests/test_correlation.py"],
}
# the battery's check modules: each family's own defect (test_families: caught by that family
# alone), the hand-made masks, the corpus and the null runs.  One unmutated pass of these took 32 s
# and 43 s in two runs here (2 busy cores), and most mutants take that long, so the battery is
# measured on a random sample of its mutants (--sample).
_BATTERY_TESTS = [
    "tests/test_battery_recomputed.py",
    "tests/test_battery_checks.py",
    "tests/test_families.py",
    "tests/test_engine.py",
    "tests/test_verify.py",
]
for _m in sorted((ROOT / "dropout_stats/battery/checks").glob("*.py")):
    TESTS.setdefault(
        f"dropout_stats/battery/checks/{_m.name}",
        [*_BATTERY_TESTS, *(["tests/test_backward.py"] if _m.name == "backward.py" else [])],
    )
BATTERY = [m for m in TESTS if "/battery/checks/" in m]
# tests run second, only on the mutants the rest did not kill (node ids; they are deselected first)
SLOW = {
    "dropout_stats/design.py": ["tests/test_design.py::test_min_num_samples_is_a_crossing_of_exact_power"],
}
STATISTICS = [m for m in TESTS if "/battery/" not in m]
_HOLM_SETS_IT = "the runner's Holm step sets the verdict of every entry with a p-value; this initial one is never read"
_SEED_SLICE_NEVER_CUTS = (
    "the slice never cuts: seed_other makes min(store_limit, max_calls) - 1 calls and the main calls "
    "stored are at least one more (more() asks for store_limit of them unless max_calls ends the run)"
)
_FAST_PATH_PAIRS = "the last axis's uint16 read is a fast path: off, the general pairing counts the same table"
_G_TWO_DIVIDES = (
    "g = min(16, positions) is 2 only for 2 positions, which divide evenly: the reshape and reduceat "
    "give the same sums, and g = 1 is handled the same by both"
)
_REDUCEAT_ANY_THRESHOLD = (
    "reached when positions do not divide into g blocks (then g is 16: more than 16 positions, so any"
    " threshold from 1 to 16 picks reduceat) or for one position (g = 1: reduceat at [0] is flat[:1])"
)
_NUMPY1_POPCOUNT = "numpy 1's popcount table: numpy >= 2 (this environment's) counts bits natively and never reads it"
_HALF_WIDENS = (
    "half precision (itemsize 2) widens to float32 under < 3, < 4, < 5 and <= 4 alike; float32 "
    "widened to float32 is itself; float64 (8) never"
)
_GUESS_ONLY = (
    "the boundary search's start only (its guess, first step or growth): _last_true returns the last "
    "true of a prefix predicate from any start (test_the_boundary_search_is_a_scan_from_any_guess: every guess "
    "from -3 to top + 3), so only the number of p-values computed changes, still O(log distance)"
)
_FLOAT_START = (
    "the float search's start only (no guess: the range's start or one float past it; a guess on "
    "start or room, clamped to the range's ends): _last_true returns a crossing from any start "
    "(test_the_first_detected_float_is_found_from_any_guess, test_the_answer_does_not_depend_on_the_near_tail_guess)"
)
_CACHE_SIZE = "the cache's capacity only: the cached functions are pure"
_SIGN_IS_PM1 = "sign is -1 or +1: sign < 0, sign <= 0 and sign < 1 agree"
EQUIVALENT: dict[tuple[str, int, str], str] = {  # (module, line, mutation) -> why it cannot be told apart
    ("dropout_stats/design.py", 105, "2 -> 1"): _GUESS_ONLY,
    ("dropout_stats/design.py", 105, "2 -> 3"): _GUESS_ONLY,
    ("dropout_stats/design.py", 107, "2 -> 1"): _GUESS_ONLY,
    ("dropout_stats/design.py", 107, "2 -> 3"): _GUESS_ONLY,
    ("dropout_stats/design.py", 128, "0 -> 1"): _GUESS_ONLY,
    ("dropout_stats/design.py", 128, "1 -> 2"): _GUESS_ONLY,
    ("dropout_stats/design.py", 134, "2 -> 3"): _GUESS_ONLY,
    ("dropout_stats/design.py", 190, "1024 -> 1023"): _CACHE_SIZE,
    ("dropout_stats/design.py", 190, "1024 -> 1025"): _CACHE_SIZE,
    ("dropout_stats/design.py", 245, "1024 -> 1023"): _CACHE_SIZE,
    ("dropout_stats/design.py", 245, "1024 -> 1025"): _CACHE_SIZE,
    ("dropout_stats/design.py", 303, "0 -> 1"): _SIGN_IS_PM1,
    ("dropout_stats/design.py", 303, "Lt -> LtE"): _SIGN_IS_PM1,
    (
        "dropout_stats/design.py",
        77,
        "LtE -> Lt",
    ): "which of two sums of the same probability at a tie P(K > low) == P(K < high) = t: both are 2t - 1 from "
    "terms of the same size, equally accurate (with both tails empty both are 1 - 0); they differ in rounding only",
    (
        "dropout_stats/design.py",
        196,
        "Gt -> GtE",
    ): "ok(0): 0 draws give the region low -1, high 1, whose miss is exactly 1 (1 - sf(0, 0, q)) > beta, so "
    "ok(0) is False either way",
    (
        "dropout_stats/design.py",
        254,
        "Lt -> LtE",
    ): "the edge keeps are exactly 0 and 1 (p - p; p + (1 - p) rounds to 1 for every p), where K is certain and "
    "miss is exactly 0 or 1: gap(room) is beta or beta - 1, never 0 for beta in (0, 1)",
    (
        "dropout_stats/design.py",
        260,
        "Lt -> LtE",
    ): "(the two of the three on 0 < dip < room; the one on gap(dip) < 0 is killed) dip = 0 or dip = room "
    "reaches gap(dip) < 0 only where gap(0) < 0 or gap(room) < 0, both excluded before: the branch runs "
    "only when gap(0) >= 0, and gap(room) < 0 has returned inf",
    (
        "dropout_stats/design.py",
        268,
        "Lt -> LtE",
    ): "a side is searched on only where its gap is negative: at result == room, gap(room) >= 0 (checked "
    "before, else inf was returned), so result <= room adds nothing",
    ("dropout_stats/design.py", 285, "0 -> 1"): _FLOAT_START,
    ("dropout_stats/design.py", 285, "Lt -> LtE"): _FLOAT_START,
    (
        "dropout_stats/design.py",
        286,
        "1 -> 0",
    ): "the float search's top one float higher lets it ask gap(room) itself, >= 0 by its precondition, so "
    "the answer is the same (the test's gap asserts it is never asked past the room)",
    ("dropout_stats/binomial.py", 86, "False -> True"): "dataclass(repr=True) keeps a __repr__ the class defines",
    ("dropout_stats/binomial.py", 75, "Gt -> GtE"): "Wilson's low bound at k = 0 is 0 up to rounding",
    ("dropout_stats/binomial.py", 76, "Lt -> LtE"): "Wilson's high bound at k = n is 1 up to rounding",
    ("dropout_stats/sequential.py", 111, "GtE -> Gt"): "differs only on an exact float tie of a log-likelihood sum "
    "with the boundary; Ville's bound holds either way",
    ("dropout_stats/sequential.py", 119, "LtE -> Lt"): "differs only on an exact float tie of a log-likelihood sum "
    "with the boundary; the clearing bound holds either way",
    ("dropout_stats/structure.py", 157, "2 -> 1"): "length is even: length < 2 and length < 1 both mean 0",
    ("dropout_stats/precision.py", 211, "NotEq -> Eq"): "(name != 'float64' only) float64 through the native "
    "route is the same product in the same format",
    ("dropout_stats/precision.py", 417, "Eq -> NotEq"): "ml_dtypes' bfloat16 casts to float64 exactly, as the "
    "bit route does; other dtypes take astype either way",
    ("dropout_stats/precision.py", 419, "Eq -> NotEq"): "ml_dtypes' bfloat16 casts to float64 exactly, as the "
    "bit route does; other dtypes take astype either way",
    ("dropout_stats/precision.py", 68, "0 -> 1"): "t = fl(1 - rate) > 0 for every rate < 1 in every format: the "
    "ceiling is at least 1 already",
    ("dropout_stats/precision.py", 351, "1 -> 2"): "the non-finite branch: inf / (2 - rate) is inf as inf / (1 - rate)",
    (
        "dropout_stats/precision.py",
        229,
        "Div -> Mult",
    ): "(the non-finite branch) inf * (1 - rate) is inf, NaN stays NaN",
    ("dropout_stats/precision.py", 229, "Sub -> Add"): "(the non-finite branch) inf / (1 + rate) is inf, NaN stays NaN",
    ("dropout_stats/precision.py", 403, "0 -> 1"): "bits < 1 adds only bits == 0, whose negation is 0 again",
    ("dropout_stats/precision.py", 403, "Lt -> LtE"): "bits <= 0 adds only bits == 0, whose negation is 0 again",
    ("dropout_stats/_exact.py", 73, "1 -> 2"): "_tail_start reads only the sign of step",
    ("dropout_stats/_exact.py", 78, "1 -> 0"): "_tail_start reads only the sign of step (0 walks down, as -1 does)",
    ("dropout_stats/_exact.py", 78, "1 -> 2"): "_tail_start reads only the sign of step",
    ("dropout_stats/_exact.py", 109, "1 -> 2"): "_tail_start reads only the sign of step",
    ("dropout_stats/_exact.py", 114, "1 -> 0"): "_tail_start reads only the sign of step (0 walks down, as -1 does)",
    ("dropout_stats/_exact.py", 114, "1 -> 2"): "_tail_start reads only the sign of step",
    ("dropout_stats/_exact.py", 72, "Lt -> LtE"): "k == mu is k == p * n, answered 1.0 on line 54 before this",
    ("dropout_stats/_exact.py", 108, "Lt -> LtE"): "x == mode has pexact == pmode, answered 1.0 on line 92 before this",
    (
        "dropout_stats/_exact.py",
        33,
        "LtE -> Lt",
    ): "the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        33,
        "30 -> 29",
    ): "the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        33,
        "30 -> 31",
    ): "the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        33,
        "64 -> 63",
    ): "the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        33,
        "64 -> 65",
    ): "the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        33,
        "Mult -> Div",
    ): "z / z = 1: the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        42,
        "Gt -> GtE",
    ): "an empty-or-single window goes to scipy: the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    ("dropout_stats/_exact.py", 44, "Gt -> GtE"): "step is +1 or -1, never 0: > 0 and >= 0 agree",
    ("dropout_stats/_exact.py", 46, "Gt -> GtE"): "step is +1 or -1, never 0: > 0 and >= 0 agree",
    ("dropout_stats/_exact.py", 47, "Gt -> GtE"): "step is +1 or -1, never 0: > 0 and >= 0 agree",
    ("dropout_stats/_exact.py", 49, "Gt -> GtE"): "step is +1 or -1, never 0: > 0 and >= 0 agree",
    ("dropout_stats/_exact.py", 57, "Lt -> LtE"): "(n <= 2) n = 2 goes to scipy, whose answer the fast path gives too",
    ("dropout_stats/_exact.py", 57, "2 -> 3"): "n = 2 goes to scipy, whose answer the fast path gives too",
    (
        "dropout_stats/_exact.py",
        57,
        "2 -> 1",
    ): "n = 1 takes the fast path, whose window covers the whole support: scipy's answer (every k at 7 p in test_binomial_equals_scipy_on_every_count_up_to_60)",
    (
        "dropout_stats/_exact.py",
        59,
        "Mult -> Div",
    ): "k == p / n never holds (p / n < 1/2 is not a count but 0, and p = 0 is handed over); k = p n then takes the general path, whose two tails are every count: cdf(k) + sf(k - 1) >= 1, capped to 1.0",
    (
        "dropout_stats/_exact.py",
        66,
        "Mult -> Div",
    ): "(the survivor is the one in sd; the one in mu is killed) sd sets z, so the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        82,
        "1.0 -> 2.0",
    ): "the two tails are disjoint: no case sums above 1 (measured: 945,000 binomial counts, n <= 60 at 500 p; 135,750 tables up to 40), so the cap at 1 never binds",
    (
        "dropout_stats/_exact.py",
        118,
        "1.0 -> 2.0",
    ): "the two tails are disjoint: no case sums above 1 (measured: 945,000 binomial counts, n <= 60 at 500 p; 135,750 tables up to 40), so the cap at 1 never binds",
    (
        "dropout_stats/_exact.py",
        88,
        "Or -> And",
    ): "a zero margin leaves one possible table: pexact == pmode == 1, answered 1.0 on line 92",
    (
        "dropout_stats/_exact.py",
        88,
        "0 -> 1",
    ): "(axis=1: the row sums read twice) a zero column sum leaves one table, answered 1.0 on line 92",
    (
        "dropout_stats/_exact.py",
        88,
        "1 -> 0",
    ): "(axis=0: the column sums read twice) a zero row sum leaves one table, answered 1.0 on line 92",
    ("dropout_stats/_exact.py", 99, "LtE -> Lt"): (
        "differs only where |pexact - pmode| / max is exactly the double 1e-14; on every table up to 40 "
        "it is below 4.4e-16 (a tie, rounded) or above 0.0099: a measure-zero case, not a proof"
    ),
    (
        "dropout_stats/_exact.py",
        99,
        "Sub -> Add",
    ): "the early return never fires; a table as likely as the mode then takes the general path, whose two tails are every table: p = 1 after the cap (equal to scipy on every table up to 12)",
    (
        "dropout_stats/_exact.py",
        103,
        "1 -> 2",
    ): "var sets z, so the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        103,
        "1 -> 0",
    ): "var sets z, so the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        103,
        "Sub -> Add",
    ): "var sets z, so the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        105,
        "Gt -> GtE",
    ): "var = 0 only when one table is possible, answered 1.0 on line 83 or 92",
    (
        "dropout_stats/_exact.py",
        105,
        "0 -> 1",
    ): "var <= 1 goes to scipy: the window's size only: _tail_start answers exactly or hands over to scipy for any window (test_exact), so only speed changes",
    (
        "dropout_stats/_exact.py",
        128,
        "Sub -> Add",
    ): "starts at n + j, above n: the walk down from above the answer reaches the same count (slower)",
    (
        "dropout_stats/_exact.py",
        129,
        "1 -> 0",
    ): "the walk down stops one count early (sf(k) <= alpha); the walk up adds it back",
    (
        "dropout_stats/_exact.py",
        129,
        "And -> Or",
    ): "the walk goes down to 0 and the walk up climbs back to the same count (slower)",
    ("dropout_stats/_exact.py", 129, "Gt -> GtE"): "at k = 0 sf(-1) = 1 > alpha stops the walk either way",
    (
        "dropout_stats/_exact.py",
        129,
        "Sub -> Add",
    ): "the walk down stops early (sf(k + 1) <= alpha); the walk up climbs to the same count",
    (
        "dropout_stats/_exact.py",
        130,
        "1 -> 2",
    ): "steps of 2 down stop at most one count early; the walk up adds it back",
    ("dropout_stats/_exact.py", 131, "Lt -> LtE"): "at k = n sf(n) = 0 <= alpha stops the walk either way",
    (
        "dropout_stats/battery/checks/correlation.py",
        66,
        "1 -> 0",
    ): "a 1-D mask's first axis is its last: the row lag is the neighbour lag, already in the set",
    (
        "dropout_stats/battery/checks/correlation.py",
        66,
        "Gt -> GtE",
    ): "a 1-D mask's first axis is its last: the row lag is the neighbour lag, already in the set",
    (
        "dropout_stats/battery/checks/correlation.py",
        72,
        "1 -> 0",
    ): "`or (1,)` is unreachable: a unit shape of ones has one unit, and applies() needs 4",
    (
        "dropout_stats/battery/checks/correlation.py",
        72,
        "1 -> 2",
    ): "(`or (2,)` only) unreachable: a unit shape of ones has one unit, and applies() needs 4",
    (
        "dropout_stats/battery/checks/correlation.py",
        93,
        "Div -> Mult",
    ): "z is only read by argmax: a positive constant factor never moves it",
    (
        "dropout_stats/battery/checks/correlation.py",
        93,
        "Mult -> Div",
    ): "z is only read by argmax: a positive constant factor never moves it",
    (
        "dropout_stats/battery/checks/correlation.py",
        99,
        "0 -> 1",
    ): "tested >= 2 for every mask of >= 4 units (1-D: 3 - 1; (2, 2): 4 - 2), so <= 1 never holds",
    (
        "dropout_stats/battery/checks/correlation.py",
        99,
        "LtE -> Lt",
    ): "tested >= 2 for every mask of >= 4 units, so tested <= 0 and < 0 never hold",
    (
        "dropout_stats/battery/checks/correlation.py",
        153,
        "0 -> 1",
    ): "at a displacement 0 slice(0, s - 0) and slice(-0, s) are one slice",
    (
        "dropout_stats/battery/checks/correlation.py",
        153,
        "GtE -> Gt",
    ): "at a displacement 0 slice(0, s - 0) and slice(-0, s) are one slice",
    (
        "dropout_stats/battery/checks/correlation.py",
        154,
        "0 -> 1",
    ): "at a displacement 0 slice(0, s) and slice(0, s + 0) are one slice",
    (
        "dropout_stats/battery/checks/correlation.py",
        154,
        "GtE -> Gt",
    ): "at a displacement 0 slice(0, s) and slice(0, s + 0) are one slice",
    (
        "dropout_stats/battery/checks/correlation.py",
        194,
        "GtE -> Gt",
    ): "at p = 0.5 q^2 - p^2 = 0: both branches give the same v",
    (
        "dropout_stats/battery/checks/correlation.py",
        204,
        "LtE -> Lt",
    ): "at s = 0 Bennett's bound is exp(0) = 1, the value returned",
    (
        "dropout_stats/battery/checks/correlation.py",
        205,
        "1.0 -> 2.0",
    ): "lag_pvalue caps at 1, and s <= 0 reaches it only through abs(s) = 0",
    (
        "dropout_stats/battery/checks/pairs.py",
        93,
        "Eq -> NotEq",
    ): "(o != 0 only; the sibling length != shape is not equivalent and the odd last axis of (9, 1001) kills it) "
    "the whole-row shortcut off: the general path counts the same table (offset 1 never spans the whole "
    "axis), given kept = count_nonzero(m) as accumulate_pairs requires",
    (
        "dropout_stats/battery/checks/pairs.py",
        93,
        "0 -> 1",
    ): "the whole-row shortcut off (offset 1 never spans the whole axis): the general path counts the same table",
    (
        "dropout_stats/battery/checks/threshold.py",
        40,
        "And -> Or",
    ): "the two conditions fail together: a backend's keep never rises with the rate, so with the configured rate out of the sweep (strict_nominal at a rate every uniform level passes: float16 at 1e-8) at most one rate is left, and the configured rate alone would need rate / 2 to keep everything and (1 + rate) / 2 nothing, impossible with 4 or more uniform levels",
    (
        "dropout_stats/battery/checks/threshold.py",
        50,
        "Or -> And",
    ): "the two conditions fail together: a backend's keep never rises with the rate, so with the configured rate out of the sweep (strict_nominal at a rate every uniform level passes: float16 at 1e-8) at most one rate is left, and the configured rate alone would need rate / 2 to keep everything and (1 + rate) / 2 nothing, impossible with 4 or more uniform levels",
    ("dropout_stats/battery/checks/call_independence.py", 78, "True -> False"): _HOLM_SETS_IT,
    ("dropout_stats/battery/checks/homogeneity.py", 86, "True -> False"): _HOLM_SETS_IT,
    ("dropout_stats/battery/checks/seeds.py", 91, "True -> False"): _HOLM_SETS_IT,
    ("dropout_stats/battery/checks/threshold.py", 95, "True -> False"): _HOLM_SETS_IT,
    ("dropout_stats/battery/checks/value_independence.py", 73, "True -> False"): _HOLM_SETS_IT,
    (
        "dropout_stats/battery/checks/call_independence.py",
        52,
        "1 -> 2",
    ): "hist keeps calls + 1 bins either way: no count exceeds calls, so bincount's extra bin is 0 and sliced "
    "off, and a slice one longer finds nothing",
    (
        "dropout_stats/battery/checks/homogeneity.py",
        53,
        "2 -> 1",
    ): "(g >= 1) only one position makes g = 1, and then the reshape and the first element give its one count",
    (
        "dropout_stats/battery/checks/seeds.py",
        79,
        "3 -> 4",
    ): "a fourth table stays empty: its p-value is 1 and its n 0, so the minimum, the Bonferroni factor (the "
    "literal 3), the sample count and argmin's first-of-equals are unchanged",
    ("dropout_stats/battery/checks/seeds.py", 82, "1 -> 0"): _SEED_SLICE_NEVER_CUTS,
    ("dropout_stats/battery/checks/seeds.py", 82, "Sub -> Add"): _SEED_SLICE_NEVER_CUTS,
    (
        "dropout_stats/battery/checks/scale.py",
        90,
        "0 -> 1",
    ): "the formula that matched before is moved to the front for speed only: a call's verdict is whether "
    "any formula matches, and the one recorded is set once, by the first call",
    (
        "dropout_stats/battery/checks/pairs.py",
        70,
        "0 -> 1",
    ): "unreachable: an entry is planned only for an axis longer than 1, where the (0,1), (2,3) pairing always "
    "has a table with pairs, so some pairing is always tested",
    (
        "dropout_stats/battery/checks/pairs.py",
        87,
        "2 -> 1",
    ): "length is even here (the odd last one cut off just before), so length < 1 and length < 2 agree",
    ("dropout_stats/battery/checks/pairs.py", 90, "Sub -> Add"): _FAST_PATH_PAIRS,
    ("dropout_stats/battery/checks/pairs.py", 90, "1 -> 0"): _FAST_PATH_PAIRS,
    ("dropout_stats/battery/checks/homogeneity.py", 53, "GtE -> Gt"): _G_TWO_DIVIDES,
    ("dropout_stats/battery/checks/homogeneity.py", 53, "2 -> 3"): _G_TWO_DIVIDES,
    ("dropout_stats/battery/checks/homogeneity.py", 56, "GtE -> Gt"): _REDUCEAT_ANY_THRESHOLD,
    ("dropout_stats/battery/checks/homogeneity.py", 56, "2 -> 1"): _REDUCEAT_ANY_THRESHOLD,
    ("dropout_stats/battery/checks/homogeneity.py", 56, "2 -> 3"): _REDUCEAT_ANY_THRESHOLD,
    (
        "dropout_stats/battery/checks/homogeneity.py",
        54,
        "1 -> 2",
    ): "numpy's reshape(g, -2) is reshape(g, -1): any negative is 'the rest'",
    (
        "dropout_stats/battery/checks/homogeneity.py",
        56,
        "1 -> 0",
    ): "(flat[:1] -> flat[:0]; the sibling in edges[:-1] is killed) one position only: fewer than 2 groups "
    "either way, so the entry is 'fewer than 2' with both",
    (
        "dropout_stats/battery/checks/homogeneity.py",
        56,
        "1 -> 2",
    ): "(flat[:1] -> flat[:2]; the sibling in edges[:-1] is killed) one position only: flat[:2] is that one count too",
    (
        "dropout_stats/battery/checks/value_independence.py",
        52,
        "0 -> 1",
    ): "n_neg counts draws, negative positions x main calls, and max_calls >= MIN_CALLS = 5: it is 0 or "
    "at least 5, never 1",
    (
        "dropout_stats/battery/checks/value_independence.py",
        58,
        "0 -> 1",
    ): "nb counts draws, positions x main calls (at least 5 calls): a bin holds 0 or at least 5, so nb > 1 "
    "and nb > 0 pick the same bins",
    (
        "dropout_stats/battery/checks/call_independence.py",
        56,
        "1 -> 2",
    ): "one more binomial cell (calls + 1 kept of calls, pmf 0): zip stops at hist's calls + 1 cells",
    (
        "dropout_stats/battery/checks/call_independence.py",
        65,
        "And -> Or",
    ): "expected_cells is empty only when all positions together expect under 1,000, i.e. under 1,000 "
    "positions, and the check needs 3,000; otherwise a leftover of o = e = 0 adds nothing",
    ("dropout_stats/battery/checks/_common.py", 11, "256 -> 255"): _NUMPY1_POPCOUNT,
    ("dropout_stats/battery/checks/_common.py", 11, "256 -> 257"): _NUMPY1_POPCOUNT,
    (
        "dropout_stats/battery/checks/_common.py",
        31,
        "Or -> And",
    ): "a table with a margin of 0 or n admits one table, so its exact Fisher p-value is 1 too: the "
    "shortcut only skips the sum",
    ("dropout_stats/battery/checks/_common.py", 46, "True -> False"): _HOLM_SETS_IT,
    ("dropout_stats/battery/checks/_common.py", 67, "4 -> 3"): _HALF_WIDENS,
    ("dropout_stats/battery/checks/_common.py", 67, "4 -> 5"): _HALF_WIDENS,
    ("dropout_stats/battery/checks/_common.py", 67, "Lt -> LtE"): _HALF_WIDENS,
    ("dropout_stats/battery/checks/noise_shape.py", 86, "True -> False"): _HOLM_SETS_IT,
    ("dropout_stats/counts.py", 30, "1 -> 2"): "the block size changes the blocks, not the counts",
    ("dropout_stats/counts.py", 30, "16 -> 15"): "the block size changes the blocks, not the counts",
    ("dropout_stats/counts.py", 30, "16 -> 17"): "the block size changes the blocks, not the counts",
    ("dropout_stats/counts.py", 150, "1 -> 2"): "numpy's reshape(-2) is reshape(-1): any negative is 'the rest'",
    ("dropout_stats/counts.py", 189, "1 -> 2"): "numpy's reshape(-2) is reshape(-1): any negative is 'the rest'",
    ("dropout_stats/counts.py", 181, "1 -> 0"): "reducing an axis of size 1 with keepdims changes nothing",
}
# survivors not shown equivalent: (module, line, mutation) -> why no test sees them.  They count as alive.
ALIVE: dict[tuple[str, int, str], str] = {
    (
        "dropout_stats/battery/checks/call_independence.py",
        54,
        "GtE -> Gt",
    ): "a pooled expected count of exactly 1000.0 (a float sum of positions times binomial pmf values) closes "
    "a cell under >= and not under >; no test has one",
    (
        "dropout_stats/battery/checks/call_independence.py",
        58,
        "Or -> And",
    ): "a leftover tail that expects positions but holds none (o = 0, e > 0) keeps its expected count out "
    "of the last cell; in the recorded runs the leftover holds 125 to 905 positions, or nothing with "
    "nothing expected (measured on the 7 configs with >= 3,000 positions), so it does not occur",
    (
        "dropout_stats/battery/checks/scale.py",
        129,
        "1 -> 2",
    ): "the closest formula is ranked by its largest ULP distance, then by its count of differing values: the mutant ranks by one of them alone (or by the sample size, equal for all); they differ only when two formulas tie on the distance and not the count, or the reverse, and no test's defect makes such a tie (seen in the screen with tests/test_battery_recomputed.py alone)",
    (
        "dropout_stats/battery/checks/scale.py",
        129,
        "2 -> 1",
    ): "the closest formula is ranked by its largest ULP distance, then by its count of differing values: the mutant ranks by one of them alone (or by the sample size, equal for all); they differ only when two formulas tie on the distance and not the count, or the reverse, and no test's defect makes such a tie (seen in the screen with tests/test_battery_recomputed.py alone)",
    (
        "dropout_stats/battery/checks/scale.py",
        129,
        "2 -> 3",
    ): "the closest formula is ranked by its largest ULP distance, then by its count of differing values: the mutant ranks by one of them alone (or by the sample size, equal for all); they differ only when two formulas tie on the distance and not the count, or the reverse, and no test's defect makes such a tie (seen in the screen with tests/test_battery_recomputed.py alone)",
    (
        "dropout_stats/battery/checks/affine.py",
        61,
        "1 -> 2",
    ): "the closest formula is ranked by its largest ULP distance, then by its count of differing values: the mutant ranks by one of them alone (or by the sample size, equal for all); they differ only when two formulas tie on the distance and not the count, or the reverse, and no test's defect makes such a tie (seen in the screen with tests/test_battery_recomputed.py alone)",
    (
        "dropout_stats/battery/checks/scale.py",
        158,
        "Lt -> LtE",
    ): "reports a design bias of exactly 1e-6 (a float from exact fractions); no configuration in the tests has one",
}

_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_BIN = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.Pow: ast.Mult,
}


def mutations(tree: ast.AST):
    """(line, description, mutate) for each single-point edit; mutate(tree) edits a copy in place."""
    nodes = [n for n in ast.walk(tree)]
    docstrings = {
        id(n.body[0].value)
        for n in nodes
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    for i, n in enumerate(nodes):
        if isinstance(n, ast.Compare):
            for j, op in enumerate(n.ops):
                if type(op) in _CMP:
                    yield n.lineno, f"{type(op).__name__} -> {_CMP[type(op)].__name__}", (i, "cmp", j)
        elif isinstance(n, ast.BinOp) and type(n.op) in _BIN:
            yield n.lineno, f"{type(n.op).__name__} -> {_BIN[type(n.op)].__name__}", (i, "bin", None)
        elif isinstance(n, ast.BoolOp):
            yield (
                n.lineno,
                f"{type(n.op).__name__} -> {'Or' if isinstance(n.op, ast.And) else 'And'}",
                (i, "bool", None),
            )
        elif isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            yield n.lineno, "drop unary minus", (i, "neg", None)
        elif isinstance(n, ast.Constant) and id(n) not in docstrings:
            if isinstance(n.value, bool):
                yield n.lineno, f"{n.value} -> {not n.value}", (i, "bool_const", None)
            elif isinstance(n.value, int):
                yield n.lineno, f"{n.value} -> {n.value + 1}", (i, "int+", None)
                if n.value != 0:
                    yield n.lineno, f"{n.value} -> {n.value - 1}", (i, "int-", None)
            elif isinstance(n.value, float):
                yield n.lineno, f"{n.value!r} -> {n.value * 2 if n.value else 1.0!r}", (i, "float", None)


def apply(tree: ast.AST, where) -> ast.AST:
    t = copy.deepcopy(tree)
    i, kind, j = where
    n = [x for x in ast.walk(t)][i]
    if kind == "cmp":
        n.ops[j] = _CMP[type(n.ops[j])]()
    elif kind == "bin":
        n.op = _BIN[type(n.op)]()
    elif kind == "bool":
        n.op = ast.Or() if isinstance(n.op, ast.And) else ast.And()
    elif kind == "neg":
        return _replace(t, n, n.operand)
    elif kind == "bool_const":
        n.value = not n.value
    elif kind == "int+":
        n.value += 1
    elif kind == "int-":
        n.value -= 1
    elif kind == "float":
        n.value = n.value * 2 if n.value else 1.0
    return t


def _replace(tree, old, new):
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return tree
            if isinstance(value, list) and any(v is old for v in value):
                value[next(k for k, v in enumerate(value) if v is old)] = new
                return tree
    return tree


def _stages(module: str, work: pathlib.Path):
    # fewer hypothesis examples per property (conftest's "mutation" profile): a mutant is killed by
    # the first failing example, and a survivor is listed either way
    env = dict(os.environ, PYTHONPATH=str(work), TF_CPP_MIN_LOG_LEVEL="3", DROPOUT_STATS_HYPOTHESIS="mutation")
    base = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts="]
    if SCREEN:  # --tests: a fast screen with these tests alone
        return [[*base, *SCREEN]], env
    slow = SLOW.get(module, [])
    stages = [[*TESTS[module], *(f"--deselect={t}" for t in slow)]] + ([slow] if slow else [])
    return [[*base, *args] for args in stages], env


def _killed(cmds, env, work: pathlib.Path, limits) -> bool:
    for cmd, limit in zip(cmds, limits, strict=True):
        try:
            r = subprocess.run(cmd, check=False, cwd=work, env=env, capture_output=True, timeout=limit)
        except subprocess.TimeoutExpired:  # a mutant that loops (a bisection that never closes)
            return True
        if r.returncode != 0:
            return True
    return False


def _worker(job):
    """Run the mutants numbered k, k + jobs, ... of a module in worktree `work`; print each."""
    module, work, picks, limits, done, total = job
    work = pathlib.Path(work)
    src = (work / module).read_text()
    tree = ast.parse(src)
    cmds, env = _stages(module, work)
    out = []
    for line, what, where in picks:
        try:
            mutated = ast.unparse(apply(tree, where))
            compile(mutated, module, "exec")
        except Exception:  # noqa: BLE001 - an edit that does not compile is no mutant
            continue
        (work / module).write_text(mutated)
        try:
            dead = _killed(cmds, env, work, limits)
        finally:
            (work / module).write_text(src)
        out.append((line, what, dead))
        done.append(1)
        print(f"  [{len(done)}/{total}] line {line}: {what}: {'killed' if dead else 'SURVIVES'}", flush=True)
    return out


def survivors_of(log: str) -> set:
    """(line, mutation) of every mutant a printed run says SURVIVES."""
    import re

    return {(int(m[1]), m[2]) for m in re.finditer(r"line (\d+): (.+): SURVIVES", pathlib.Path(log).read_text())}


SCREEN: list = []  # --tests: run these instead of the module's own tests
SAMPLE_SEED = 0  # --sample-seed: 0 keeps the samples the README's figures were measured on
_LIMITS: dict = {}  # test commands -> per-stage time limits, measured on the unmutated code


def run(module: str, works: list[pathlib.Path], sample: float | None = None, only=None) -> tuple[int, int, list]:
    from concurrent.futures import ThreadPoolExecutor

    muts = list(mutations(ast.parse((works[0] / module).read_text())))
    if only is not None:  # a previous run's survivors only (the module unchanged since)
        muts = [m for m in muts if (m[0], m[1]) in only]
    if sample is not None:  # each mutant kept with probability `sample`, seeded by the module's name
        import random

        rng = random.Random(module if not SAMPLE_SEED else f"{module}:{SAMPLE_SEED}")
        muts = [m for m in muts if rng.random() < sample]
    # a stage that takes 4x (and 30 s) longer than on the unmutated code is a mutant that loops
    cmds, env = _stages(module, works[0])
    key = tuple(map(tuple, cmds))  # the battery's modules share one test list: timed once
    if key not in _LIMITS:
        limits = []
        for cmd in cmds:
            t = time.perf_counter()
            r = subprocess.run(cmd, check=False, cwd=works[0], env=env, capture_output=True)
            if r.returncode != 0:
                raise SystemExit(f"{module}: the tests fail on the unmutated code:\n{r.stdout.decode()[-2000:]}")
            limits.append(30 + 4 * (time.perf_counter() - t))
        _LIMITS[key] = limits
    limits = _LIMITS[key]
    done: list = []
    jobs = [(module, str(w), muts[k :: len(works)], limits, done, len(muts)) for k, w in enumerate(works)]
    with ThreadPoolExecutor(len(works)) as pool:  # threads suffice: each mutant is a subprocess
        results = [r for part in pool.map(_worker, jobs) for r in part]
    survivors = sorted((line, what) for line, what, dead in results if not dead)
    return len(results) - len(survivors), len(results), survivors


def main(modules, jobs, sample=None, only=None):
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        works = [pathlib.Path(tmp) / f"work{k}" for k in range(jobs)]
        for work in works:
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(work), "HEAD"], cwd=ROOT, check=True, capture_output=True
            )
        try:
            total_k = total_n = total_eq = 0
            for module in modules:
                t = time.perf_counter()
                k, n, survivors = run(module, works, sample, only)
                eq = [s for s in survivors if (module, s[0], s[1]) in EQUIVALENT]
                total_k, total_n, total_eq = total_k + k, total_n + n, total_eq + len(eq)
                print(
                    f"{module}: {k} of {n} killed, {len(eq)} equivalent, "
                    f"{len(survivors) - len(eq)} survive ({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
                for line, what in survivors:
                    why = EQUIVALENT.get((module, line, what))
                    alive = ALIVE.get((module, line, what))
                    print(
                        f"    line {line}: {what}"
                        + (f"  [equivalent: {why}]" if why else "")
                        + (f"  [alive: {alive}]" if alive else ""),
                        flush=True,
                    )
            print(
                f"total: {total_k} of {total_n - total_eq} non-equivalent mutants killed "
                f"({total_k / max(1, total_n - total_eq):.1%}); {time.perf_counter() - t0:.0f} s "
                f"with {jobs} workers"
            )
            if sample is not None and total_n > total_eq:
                from scipy import stats  # the sampled score estimates the whole one: its exact interval

                ci = stats.binomtest(total_k, total_n - total_eq).proportion_ci(0.95)
                print(
                    f"sampled {sample:.0%} of the mutants: score 95% interval [{ci.low:.1%}, {ci.high:.1%}] "
                    "(Clopper-Pearson)"
                )
        finally:
            for work in works:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(work)], check=False, cwd=ROOT, capture_output=True
                )


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--sample", type=float, default=None, help="run each mutant with this probability (a seeded random sample)"
    )
    ap.add_argument(
        "--sample-seed",
        type=int,
        default=0,
        help="another seeded sample (a fresh one to measure a score after tests were written "
        "against an earlier sample's survivors)",
    )
    ap.add_argument("--battery", action="store_true", help="the battery's check modules")
    ap.add_argument(
        "--survivors-of",
        metavar="LOG",
        default=None,
        help="run only the mutants whose (line, mutation) this printed run of ONE module lists as SURVIVES "
        "(the module unchanged since); a key can also match a sibling killed before, so "
        "count the final score as all mutants minus the last run's survivors",
    )
    ap.add_argument(
        "--tests",
        nargs="+",
        default=[],
        metavar="TEST",
        help="a screen: run only these tests on every mutant (not a score; its survivors are then "
        "re-run with the module's own tests through --survivors-of)",
    )
    ap.add_argument("modules", nargs="*", help=f"default: {' '.join(STATISTICS)}")
    a = ap.parse_args()
    if a.jobs < 1:
        ap.error(f"--jobs ({a.jobs}) must be at least 1")
    if a.sample is not None and not 0 < a.sample <= 1:
        ap.error(f"--sample ({a.sample}) must be in (0, 1]")
    if a.sample_seed and a.sample is None:
        ap.error(f"--sample-seed ({a.sample_seed}) needs --sample")
    for m in a.modules:
        if m not in TESTS:
            ap.error(f"module ({m}) has no tests named in TESTS: one of {', '.join(TESTS)}")
    if a.survivors_of is not None and not pathlib.Path(a.survivors_of).is_file():
        ap.error(f"--survivors-of ({a.survivors_of}) must be a file")
    if a.survivors_of is not None and len(a.modules) != 1:
        ap.error(f"--survivors-of needs exactly one module (got {len(a.modules)}): its log names lines, not modules")
    SAMPLE_SEED = a.sample_seed
    SCREEN = a.tests
    main(
        a.modules or (BATTERY if a.battery else STATISTICS),
        a.jobs,
        a.sample,
        survivors_of(a.survivors_of) if a.survivors_of else None,
    )
