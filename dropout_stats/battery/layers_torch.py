"""verify_layer for PyTorch modules: ``train()`` and ``eval()`` are the training flag.

A torch module has no ``training=`` argument: its mode is ``module.training``, set by
``train()``/``eval()`` on it or on any module holding it.  The defects of this class are public:
dropout applied in eval mode (NVIDIA/apex#1449; pytorch/pytorch#124464 for attention), one
evaluation pass that left the rate at 0 (NVIDIA/Megatron-LM#411), a flag of its own that a
parent's ``eval()`` never reaches.  The checks keep verify_layer's names, read for torch:

* ``inference_identity`` (exact): x bit for bit after ``eval()``, under ``torch.no_grad()`` and
  ``torch.inference_mode()`` (other code paths in torch), and after a parent module's ``eval()``;
* ``mode_transitions``: ``train()``, ``eval()``, ``train()`` again: the keep rate after the switch;
* ``fit``: torch has no fit; a training loop's step: a parent module evaluated, switched back with
  ``train()``, then two forward, backward and optimizer steps whose outputs of the layer (a
  forward hook) keep at the rate (exact binomial test);
* ``instances``: two modules, and two held by one parent, draw independent masks (Fisher);
* ``config_round_trip``: ``torch.save``/``torch.load`` of the module keeps its settings, and the
  loaded module drops at its rate and is the identity in eval mode;
* ``replicas``: not run (torch.distributed needs a process group; not applicable).

Every call gets a copy of x, so ``inplace=True`` modules are verified too.  torch's generator is
seeded with ``seed`` first: a run replays exactly.  Corpus: ``calibration.corpus_torch.torch_layer_defects()``.
"""

from __future__ import annotations

import io

from ..report import Check
from .layer_probe import LayerProbe, _make


class TorchLayerProbe(LayerProbe):
    framework, reference = "torch", None

    def __init__(self, *args):
        super().__init__(*args)
        import torch

        self.torch = torch
        torch.manual_seed(self.seed)

    def forward(self, layer, x, training):
        if training is not None:
            layer.train(training)
        return layer(x.clone())

    def inference_identity(self, layer) -> Check:
        torch = self.torch
        layer.eval()
        results = {"eval()": self.identical(self.call(layer, None))}
        results.update({f"eval(), {k}": ok for k, ok in self.small_batch_identity(layer, None).items()})
        with torch.no_grad():
            results["eval() under torch.no_grad()"] = self.identical(self.call(layer, None))
        with torch.inference_mode():
            results["eval() under torch.inference_mode()"] = self.identical(self.call(layer, None))
        parent = torch.nn.Sequential(_make(self.make_layer, self.rate, self.seed)).train()
        parent.eval()
        results["a parent module's eval()"] = self.identical(self.call(parent, None))
        bad = [k for k, ok in results.items() if not ok]
        return Check(
            "inference_identity",
            not bad,
            samples=self.x_np.size * len(results),
            observed="x unchanged by " + ", ".join(results) if not bad else f"x changed by {', '.join(bad)}",
            expected="x bit for bit in eval mode",
            values=results,
        )

    def gradient_free_masks(self, layer) -> tuple[list, str]:
        """train() mode under torch.no_grad() and torch.inference_mode(): Monte Carlo dropout."""
        torch = self.torch
        layer.train()
        masks = []
        for ctx in (torch.no_grad, torch.inference_mode):
            with ctx():
                masks.append(self.mask(self.call(layer, None)))
        return masks, "train() under torch.no_grad() and torch.inference_mode()"

    def fit(self, level) -> Check:
        torch = self.torch
        layer = _make(self.make_layer, self.rate, self.seed + 13)
        parent = torch.nn.Sequential(_unit(self.x.dtype), layer)
        seen = []
        layer.register_forward_hook(lambda m, args, out: seen.append(self.backend.to_numpy(out)))
        parent.eval()
        with torch.no_grad():
            parent(self.x.clone())
        still = self.identical(seen.pop())
        parent.train()
        optimizer = torch.optim.SGD(parent.parameters(), lr=0.0)  # lr 0: the unit weight stays exactly 1
        for _ in range(2):
            optimizer.zero_grad()
            parent(self.x.clone()).float().square().mean().backward()
            optimizer.step()
        self.samples += sum(m.size for m in seen)
        return self.rate_check(
            "fit",
            [self.mask(m) for m in seen],
            level,
            "torch has no fit: the keep rate of 2 training steps (forward, backward, SGD) of a "
            "parent module after its eval() and train()",
            "" if still else "the evaluation pass before training changed x",
        )

    def instances(self, level) -> Check:
        torch = self.torch
        a, b = (_make(self.make_layer, self.rate, None) for _ in range(2))
        pairs = [(self.mask(self.call(a, True)), self.mask(self.call(b, True)))]
        parent = torch.nn.ModuleList([_make(self.make_layer, self.rate, None) for _ in range(2)]).train()
        pairs.append(tuple(self.mask(self.call(m, None)) for m in parent))
        if self.kind == "gaussian":
            return Check("instances", None, "statistical", detail="no Gaussian dropout in torch")
        return self.independence("instances", pairs, level, "two modules; two modules held by one parent")

    def replicas(self, n, level) -> Check:
        return Check(
            "replicas",
            None,
            "statistical",
            detail="not run for torch modules: torch.distributed needs a process group per replica",
        )

    def config_round_trip(self, level) -> Check:
        torch = self.torch
        layer = _make(self.make_layer, self.rate, self.seed + 23)
        want = _settings(layer)
        buffer = io.BytesIO()
        try:
            torch.save(layer, buffer)
            buffer.seek(0)
            loaded = torch.load(buffer, weights_only=False)
        except Exception as exc:  # a class defined inside a function does not pickle
            return Check(
                "config_round_trip",
                None,
                "statistical",
                detail=f"torch.save/torch.load failed: {type(exc).__name__}: {str(exc)[:200]}",
            )
        got = _settings(loaded)
        problems = [f"torch.save/load: {k} {v!r} -> {got.get(k)!r}" for k, v in want.items() if got.get(k) != v]
        return self.reloaded_check(loaded, "loaded module", problems, f"settings kept ({want})", level)


def _unit(dtype):
    """A module with a parameter that multiplies by exactly 1, so the optimizer has something to step."""
    import torch

    class Unit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=dtype))

        def forward(self, x):
            return x * self.w

    return Unit()


def _settings(layer) -> dict:
    """A module's plain settings (p, inplace, ...), its training flag aside."""
    return {
        k: v
        for k, v in vars(layer).items()
        if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, type(None)))
    }


__all__ = ["TorchLayerProbe"]
