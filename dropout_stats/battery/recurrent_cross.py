"""input_recurrent_independence: the input mask and the recurrent mask of one call of a
recurrent layer are independent (the contract), read by verify_recurrent's cross probe
(``recurrent`` module docstring).

Detects a recurrent mask that is a function of the input mask of the same call: the same mask
(at equal rates), its complement (rates r and 1 - r), the input mask rolled over units or over
sequences, its units reversed or permuted, or both masks thresholds of one uniform draw (a
SeedGenerator made twice from one seed: nested masks).  Each of those keeps its rate, one mask
per sequence, fresh per call: only this check catches them (tests/test_recurrent.py).  Not
caught: a dependence that no pair of positions shows (a recurrent unit the XOR of two input
units); with ``per_step=True``, one between the masks of the same step t >= 1 (the probe reads
the input mask at step 0 only).
Tests, at every step t >= 1 of the recurrent mask against the input mask of step 0: the pairs
(m_in[b + d_b, j + d_u], m_rec[b, j]) for every cyclic displacement (d_b, d_u) over sequences and
units, the same with the input's units reversed (one FFT counts them all), and each pair of units
(i, j) over the sequences.  Each table's p-value is twice the smaller one-sided tail of Fisher's
hypergeometric distribution (exact, valid, at most twice Fisher's two-sided p); Bonferroni over
(2 x batch x units + units^2) x steps tables.  No approximation enters a p-value; the unit pairs
get an exact p only for the most extreme standardized counts (a smaller p elsewhere would only
make the check stricter than it reports, never more lenient: the reported p is >= the true
minimum).  At verify_recurrent's default (batch 332, 64 units, 4 steps, share 1.25e-7 of 1e-6)
it detects a correlation of 0.070 at one displacement (21,248 pairs) or 0.56 between two units
(332 pairs), with probability 1 - 1e-3 (normal approximation (z_{alpha/2} + z_beta) / sqrt(pairs)).
"""

from __future__ import annotations

import numpy as np

from ..report import Check


def _two_sided(x, n, na, nb) -> float:
    """Twice the smaller one-sided tail of Fisher's hypergeometric distribution (a valid two-sided
    p-value, at most twice Fisher's own) for x pairs both kept among n, na and nb kept."""
    from scipy.stats import hypergeom

    if not (0 < na < n and 0 < nb < n):
        return 1.0  # a mask all kept or all dropped: the table is the only one possible
    return min(1.0, 2 * float(min(hypergeom.cdf(x, n, na, nb), hypergeom.sf(x - 1, n, na, nb))))


def _displacement_candidates(m_in, r, t):
    """(p, x, n, na, nb, where) at the smallest and the largest count over every cyclic
    displacement of (m_in[b + d_b, j + d_u] or m_in[b + d_b, c - j], r[b, j]): the margins do not
    depend on the displacement, so a step's smallest p is at one of the two."""
    from scipy import fft as sfft

    b, u = m_in.shape
    n, na, nb = m_in.size, int(m_in.sum()), int(r.sum())
    conj = np.conj(sfft.rfft2(r.astype(np.float64)))
    spectra = [sfft.rfft2(m.astype(np.float64)) for m in (m_in, m_in[:, ::-1])]
    both = np.rint([sfft.irfft2(conj * fa, s=(b, u)) for fa in spectra]).astype(np.int64)  # r[x] a[x + d]
    for i in {int(both.argmin()), int(both.argmax())}:
        x = int(both.flat[i])
        reflected, db, du = (int(v) for v in np.unravel_index(i, both.shape))
        db, du = (d if d <= size // 2 else d - size for d, size in ((db, b), (du, u)))
        seq = "b" if db == 0 else f"b {'+' if db > 0 else '-'} {abs(db)}"
        unit = f"{(u - 1 - du) % u} - j" if reflected else "j" if du == 0 else f"j {'+' if du > 0 else '-'} {abs(du)}"
        where = (
            {"displacement": [db, du], "reflected": bool(reflected), "step": t + 1},
            f"recurrent (b, j) at step {t + 1} and input ({seq}, {unit}) at step 0",
        )
        yield _two_sided(x, n, na, nb), x, n, na, nb, where


def _unit_pair_candidates(m_in, r, t, top=3):
    """The same for every pair (input unit i, recurrent unit j) over the sequences (any fixed
    permutation of units).  Only the ``top`` tables of each sign of the standardized count get an
    exact p: the smallest p found is then >= the smallest of all, so the test stays valid."""
    b = m_in.shape[0]
    a, rr = m_in.astype(np.float64), r.astype(np.float64)
    both = np.einsum("bi,bj->ij", a, rr)  # not BLAS: its threads stall on a shared, loaded machine
    na, nb = a.sum(axis=0)[:, None], rr.sum(axis=0)[None, :]
    var = na * nb * (b - na) * (b - nb) / (b * b * max(b - 1, 1))
    z = np.divide(both - na * nb / b, np.sqrt(var), out=np.zeros_like(both), where=var > 0).ravel()
    order = np.argsort(z)
    for k in {*order[:top].tolist(), *order[-top:].tolist()}:
        i, j = np.unravel_index(k, both.shape)
        x, ki, kj = int(both[i, j]), int(na[i, 0]), int(nb[0, j])
        where = (
            {"units": [int(i), int(j)], "step": t + 1},
            f"recurrent unit {j} at step {t + 1} and input unit {i} at step 0, over the {b} sequences",
        )
        yield _two_sided(x, b, ki, kj), x, b, ki, kj, where


def cross_check(m_in, m_rec, level, reproduce="") -> Check:
    """The recurrent masks ``m_rec`` (batch, steps, units) against the input mask ``m_in`` (batch,
    units) of the same call, at every step: an exact test on the pairs (m_in[b + d_b, j + d_u],
    m_rec[b, t, j]) for every cyclic displacement (d_b, d_u), the same with the input's units
    reversed, and on each pair of units (i, j) over the sequences; Bonferroni over all tables."""
    b, u = m_in.shape
    steps = m_rec.shape[1]
    tests = (2 * b * u + u * u) * steps
    found = []
    for t in range(steps):
        found += _displacement_candidates(m_in, m_rec[:, t], t)
        found += _unit_pair_candidates(m_in, m_rec[:, t], t)
    p, x, n, na, nb, (where, words) = min(found, key=lambda c: c[0])  # ties: the first, displacements
    pvalue = min(1.0, p * tests)
    pa, pb = na / n, nb / n
    agree, independent = (n - na - nb + 2 * x) / n, pa * pb + (1 - pa) * (1 - pb)
    return Check(
        "input_recurrent_independence",
        bool(pvalue > level),
        "statistical",
        pvalue,
        level,
        m_in.size,
        values={
            "agreement": agree,
            "independent_agreement": independent,
            **where,
            "pairs": n,
            "tests": tests,
            "kept_given_partner_kept": x / na if na else float("nan"),
        },
        observed=f"most extreme: agreement {agree:.6g} of {words}",
        expected=f"agreement {independent:.6g} = p_in p_rec + q_in q_rec (independent masks)",
        detail=f"an exact test (Fisher's hypergeometric tails) on the pairs of one call's recurrent mask "
        f"(sequence b, unit j) and input mask (sequence b + d_b, unit j + d_u or reversed; or unit i of the "
        f"same sequence), each displacement, pair of units and step: the most extreme of {tests:,}, Bonferroni",
        reproduce=reproduce,
    )
