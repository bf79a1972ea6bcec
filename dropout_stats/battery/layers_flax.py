"""verify_layer for Flax NNX modules: ``train()`` and ``eval()`` (the ``deterministic`` attribute)
are the training flag, the ``deterministic=`` call argument overrides it.

An nnx module carries its own RNG stream (``rngs=nnx.Rngs(dropout=seed)``), advanced on every
call, eagerly and through ``nnx.jit``.  The checks keep verify_layer's names, read for Flax:

* ``inference_identity`` (exact): x bit for bit with ``deterministic=True``, after ``eval()``,
  after ``eval()`` under ``nnx.jit``, and after a parent module's ``eval()`` (which sets
  ``deterministic`` on every module under it);
* ``mode_transitions``: ``train()``, ``eval()``, ``train()`` again: the keep rate after the switch;
* ``fit``: Flax has no fit; a training loop's calls: a parent module (a unit parameter, then the
  layer) evaluated, switched back with ``train()``, then called under ``nnx.jit`` twice; the
  keep rate of those outputs (exact binomial test) and, since a stream that does not advance
  under jit gives both calls one mask, their independence (Fisher, in the same check);
* ``instances``: two layers made with different seeds draw independent masks (nnx has no unseeded
  layer); two made with one seed drawing one mask is a finding, as for Keras;
* ``config_round_trip``: ``nnx.split``/``nnx.merge`` (the graph and state a checkpoint saves) keep
  rate, broadcast_dims and deterministic, and the merged layer drops at its rate;
* ``replicas``: not run (no jax.sharding replicas are built here).

flax.linen modules are functions of their variables and an rng (``apply``): verify them with
``verify(fn, backend="jax")`` as ``adapters.jax.linen_dropout`` does.
"""

from __future__ import annotations

from ..report import Check
from .layer_probe import LayerProbe, _make


class FlaxLayerProbe(LayerProbe):
    framework, reference = "jax", None

    def forward(self, layer, x, training):
        if training is not None:
            layer.train() if training else layer.eval()
        return layer(x)

    def inference_identity(self, layer) -> Check:
        from flax import nnx

        layer.train()
        results = {"deterministic=True": self.identical(self._read(layer(self.x, deterministic=True)))}
        results["eval()"] = self.identical(self.call(layer, False))
        results.update({f"eval(), {k}": ok for k, ok in self.small_batch_identity(layer, False).items()})
        results["eval() under nnx.jit"] = self.identical(self._read(nnx.jit(lambda m, t: m(t))(layer, self.x)))
        parent = _Parent(_make(self.make_layer, self.rate, self.seed), self.x.dtype)
        parent.eval()
        results["a parent module's eval()"] = self.identical(self._read(parent(self.x)))
        layer.train()
        bad = [k for k, ok in results.items() if not ok]
        return Check(
            "inference_identity",
            not bad,
            samples=self.x_np.size * len(results),
            observed="x unchanged by " + ", ".join(results) if not bad else f"x changed by {', '.join(bad)}",
            expected="x bit for bit at inference",
            values=results,
        )

    def gradient_free_masks(self, layer) -> tuple[list, str]:
        """train() mode under nnx.jit with no gradient taken: Monte Carlo dropout."""
        from flax import nnx

        layer.train()
        return [self.mask(self._read(nnx.jit(lambda m, t: m(t))(layer, self.x)))], "train() under nnx.jit, no grad"

    def _read(self, y):
        y_np = self.backend.to_numpy(y)
        self.samples += y_np.size
        return y_np

    def fit(self, level) -> Check:
        from flax import nnx

        parent = _Parent(_make(self.make_layer, self.rate, self.seed + 13), self.x.dtype)
        parent.eval()
        still = self.identical(self._read(parent(self.x)))
        parent.train()
        step = nnx.jit(lambda m, t: m(t))
        masks = [self.mask(self._read(step(parent, self.x))) for _ in range(2)]
        check = self.rate_check(
            "fit",
            masks,
            level,
            "Flax has no fit: the keep rate of 2 nnx.jit calls of a parent module after its eval() and train()",
            "" if still else "the evaluation call before training changed x",
        )
        if self.kind != "gaussian" and check.pvalue is not None:
            pair = self.independence("fit", [tuple(masks)], level, "the 2 nnx.jit calls")
            check.pvalue = min(1.0, 2 * min(check.pvalue, pair.pvalue))  # Bonferroni over rate and pair
            check.observed += f"; {pair.observed} between the calls"
            check.expected += f"; {pair.expected}"
        return check

    def instances(self, level) -> Check:
        a, b = (_make(self.make_layer, self.rate, self.seed + k) for k in (29, 31))
        s1, s2 = (_make(self.make_layer, self.rate, self.seed + 19) for _ in range(2))
        same = float((self.mask(self.call(s1, True)) == self.mask(self.call(s2, True))).mean())
        from ..report import Finding

        self.findings.append(
            Finding(
                "same_seed_layers",
                f"{type(s1).__name__}: two layers made with one seed draw "
                + ("identical masks" if same == 1.0 else f"masks that agree at {same:.4f}"),
                same,
            )
        )
        if self.kind == "gaussian":
            return self.noise_correlation(
                "instances", [(self.call(a, True), self.call(b, True))], level, "two layers of different seeds"
            )
        return self.independence(
            "instances",
            [(self.mask(self.call(a, True)), self.mask(self.call(b, True)))],
            level,
            "two layers made with different seeds (nnx has no unseeded layer)",
        )

    def replicas(self, n, level) -> Check:
        return Check("replicas", None, "statistical", detail="not run for Flax modules: no jax.sharding replicas")

    def config_round_trip(self, level) -> Check:
        from flax import nnx

        layer = _make(self.make_layer, self.rate, self.seed + 23)
        keys = ("rate", "broadcast_dims", "deterministic")
        want = {k: getattr(layer, k, None) for k in keys}
        merged = nnx.merge(*nnx.split(layer))
        problems = [
            f"nnx.split/merge: {k} {v!r} -> {getattr(merged, k, None)!r}"
            for k, v in want.items()
            if getattr(merged, k, None) != v
        ]
        return self.reloaded_check(merged, "merged layer", problems, f"settings kept ({want})", level)


def _Parent(layer, dtype):
    """An nnx module holding a unit parameter (x * 1, exact) and the layer."""
    import jax.numpy as jnp
    from flax import nnx

    class Parent(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((), dtype))
            self.drop = layer

        def __call__(self, x):
            return self.drop(x * self.w[...])

    return Parent()


__all__ = ["FlaxLayerProbe"]
