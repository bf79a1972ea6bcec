"""The layer probe: verify_layer's checks for Keras and tf_keras layers, and the base that the
other frameworks' probes (``layers_torch``, ``layers_flax``) extend.  The framework probes import
this module and never ``layers``; ``layers`` finds them by name (``PROBES``), as ``backends`` finds
its backends, so no import runs in a circle."""

from __future__ import annotations

import inspect
import tempfile

import numpy as np

from ..binomial import rate_test
from ..report import Check, Finding, Report
from .checks._common import fisher
from .kinds import positive_input


def _make(make_layer, rate, seed):
    try:
        layer = make_layer(rate, seed)
    except Exception as exc:
        raise TypeError(f"make_layer({rate!r}, {seed!r}) raised {type(exc).__name__}: {exc}") from None
    call = getattr(layer, "call", None) or layer
    if not callable(layer) or isinstance(layer, (int, float, str)):
        raise TypeError(
            f"make_layer ({make_layer!r}) returned {type(layer).__name__}, not a layer called as layer(x, training=...)"
        )
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        params = {}
    if _is_torch(layer) or _is_flax(layer):  # train()/eval() are its training flag
        return layer
    if "training" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise TypeError(
            f"make_layer returned {type(layer).__name__}, whose call takes no 'training' argument: "
            "verify_layer needs layer(x, training=True/False)"
        )
    return layer


def _is_flax(layer) -> bool:
    """A flax.nnx.Module (found without importing flax)."""
    return any(c.__module__ == "flax.nnx.module" and c.__name__ == "Module" for c in type(layer).__mro__)


def _is_torch(layer) -> bool:
    """A torch.nn.Module (found without importing torch)."""
    return any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in type(layer).__mro__)


def _name(layer) -> str:
    if _is_torch(layer):
        module = type(layer).__module__
        return (
            f"torch.nn.{type(layer).__name__}"
            if module.startswith("torch.")
            else f"{module}.{type(layer).__qualname__}"
        )
    if _is_flax(layer):
        module = type(layer).__module__
        return (
            f"flax.nnx.{type(layer).__name__}" if module.startswith("flax.") else f"{module}.{type(layer).__qualname__}"
        )
    return f"{type(layer).__module__.split('.')[0]}.layers.{type(layer).__name__}"


SMALL_BATCHES = (1, 2, 3, 7)  # inference identity at these batch sizes too


class ProbeBase:
    """What every framework's layer probe shares: the layer's calls, the battery on its training
    calls, masks, the exact rate check and the guard that turns a layer's exception into a failed entry."""

    framework, reference = "tensorflow", "tensorflow"
    exact_scale = False  # verify_layer(exact_scale=True) sets it on the instance

    def __init__(self, make_layer, rate, dtype, shape, noise_shape, seed, kind):
        self.make_layer, self.rate, self.dtype, self.seed, self.kind = make_layer, rate, dtype, seed, kind
        self.shape, self.noise_shape = tuple(shape), noise_shape
        self.x_np = positive_input(shape, dtype, seed)
        from ..backends import get_backend

        self.backend = get_backend(self.framework)
        self.x = self.backend.native(self.x_np)
        self.findings, self.samples = [], 0
        self.keep = None
        self.dropped_values = np.array([0.0])

    @property
    def tf(self):
        import tensorflow as tf

        return tf

    def forward(self, layer, x, training):
        """One call of the layer; ``training`` None: the flag omitted."""
        return layer(x) if training is None else layer(x, training=training)

    # -- the battery on training=True calls -----------------------------------------------------
    def battery(self, alpha, beta, discrepancy) -> Report:
        from .api import run_battery
        from .config import configure
        from .kinds import AlphaDropout, Dropout

        layers = {}

        def fn(x, rate, noise_shape=None):
            if rate not in layers:
                layers[rate] = _make(self.make_layer, rate, self.seed + len(layers))
            return self.forward(layers[rate], x, True)

        fn.__qualname__ = _name(_make(self.make_layer, self.rate, self.seed))
        if self.kind == "gaussian":
            from .gaussian import verify_gaussian_dropout

            return verify_gaussian_dropout(
                fn,
                rate=self.rate,
                dtype=self.dtype,
                shape=self.shape,
                seed=self.seed,
                backend=self.framework,
                false_fail_rate=alpha,
                false_pass_rate=beta,
                discrepancy=discrepancy,
            )
        cfg = configure(
            fn,
            rate=self.rate,
            dtype=self.dtype,
            shape=self.shape,
            noise_shape=self.noise_shape,
            seed=self.seed,
            stateful=True,
            backend=self.framework,
            reference=self.reference,
            false_fail_rate=alpha,
            false_pass_rate=beta,
            discrepancy=discrepancy,
            strict_nominal=False,
            max_calls=20_000,
            keep_dtype="float32" if self.kind == "alpha" else None,
            exact_scale=self.exact_scale,
        )
        cfg.probe = None  # a layer applies its own noise shape: no probe with another one
        report = run_battery(cfg, AlphaDropout(cfg.rate, cfg.dtype) if self.kind == "alpha" else Dropout())
        self.keep = cfg.keep
        if self.kind == "alpha":
            self.dropped_values = AlphaDropout(cfg.rate, cfg.dtype).dropped_values
        return report

    # -- reading a layer's output ---------------------------------------------------------------
    def call(self, layer, training, x=None):
        y_np = np.asarray(self.backend.to_numpy(self.forward(layer, self.x if x is None else x, training)))
        self.samples += y_np.size
        if y_np.shape != self.shape or y_np.dtype.name != self.dtype:
            raise TypeError(
                f"{_name(layer)} returned {y_np.dtype.name} {list(y_np.shape)} for {self.dtype} "
                f"{list(self.shape)} input: construct it to compute in {self.dtype} "
                f"(Keras: dtype={self.dtype!r})"
            )
        return y_np

    def mask(self, y_np) -> np.ndarray:
        """Kept units (one per broadcast unit); for Gaussian dropout, positions with noise."""
        if self.kind == "gaussian":
            kept = y_np.astype(np.float64) != self.x_np.astype(np.float64)
        else:
            kept = ~np.isin(y_np.astype(np.float64), self.dropped_values)
        if self.noise_shape is None:
            return kept
        axes = tuple(i for i, (d, s) in enumerate(zip(self.noise_shape, self.shape, strict=True)) if d == 1 and s != 1)
        return kept.any(axis=axes)

    def identical(self, y_np) -> bool:
        return np.array_equal(y_np.view(np.uint8), self.x_np.view(np.uint8))

    def small_batch_identity(self, layer, training) -> dict:
        """{"batch b": x[:b] returned bit for bit} at inference, for the small batch sizes a layer
        may treat apart (1 included): inference identity must not depend on the batch."""
        out = {}
        for b in SMALL_BATCHES:
            if b >= self.shape[0]:
                continue
            x_np = np.ascontiguousarray(self.x_np[:b])
            y = np.asarray(self.backend.to_numpy(self.forward(layer, self.backend.native(x_np), training)))
            self.samples += x_np.size
            out[f"batch {b}"] = y.shape == x_np.shape and np.array_equal(y.view(np.uint8), x_np.view(np.uint8))
        return out

    def gradient_free_masks(self, layer) -> tuple[list, str]:
        """Masks of training calls made without any gradient being recorded (Monte Carlo dropout at
        inference time), and what they were: Keras on TensorFlow, training=True inside a
        tf.function with no tape.  Other frameworks' probes override it."""
        if self.framework != "tensorflow":
            return [], ""
        tf = self.tf
        y = tf.function(lambda t: layer(t, training=True))(self.x)
        y_np = np.asarray(self.backend.to_numpy(y))
        self.samples += y_np.size
        return [self.mask(y_np)], "training=True inside tf.function with no gradient tape"

    def rate_check(self, name, masks, level, what, extra_fail="") -> Check:
        kept = int(sum(np.count_nonzero(m) for m in masks))
        n = int(sum(m.size for m in masks))
        if self.kind == "gaussian":  # noise nearly everywhere: fl(1 + sd z) == 1 leaves a few x unchanged
            from scipy import stats

            from .._exact import binom_upper_quantile
            from .gaussian import unchanged_share_bound

            bound = unchanged_share_bound(self.rate, self.dtype)
            same = n - kept
            p = float(stats.binom.sf(same - 1, n, bound)) if same else 1.0
            limit = binom_upper_quantile(level, n, bound)
            return Check(
                name,
                not extra_fail,
                "statistical",
                p,
                level,
                n,
                observed=f"{same}/{n} positions unchanged (no noise)",
                expected=f"at most a share {bound:.3g} unchanged (noise rounding to 1)",
                detail=extra_fail
                or (f"{what}; exact binomial upper tail against that share: fails beyond {limit} unchanged positions"),
                values={"noisy": kept, "n": n, "unchanged": same, "bound": float(bound)},
            )
        r = rate_test(kept, n, self.keep)
        return Check(
            name,
            False if extra_fail else True,
            "statistical",
            r.pvalue,
            level,
            n,
            observed=f"{kept}/{n} kept = {kept / n:.6g}",
            expected=f"{self.keep:.10g}",
            detail=extra_fail or f"{what}; exact binomial test",
            values={"kept": kept, "n": n, "fraction": kept / n},
        )

    # -- the checks -------------------------------------------------------------------------------
    def guarded(self, name, check, *args) -> Check:
        """A layer that raises inside a check fails that check with the reason, never a traceback."""
        try:
            return check(*args)
        except TypeError as exc:  # our own contract errors (the output's shape or dtype)
            if "construct it to compute" in str(exc):
                raise
            return Check(name, False, detail=f"the layer raised {type(exc).__name__}: {str(exc)[:300]}")
        except Exception as exc:  # noqa: BLE001 - the layer's, reported
            return Check(name, False, detail=f"the layer raised {type(exc).__name__}: {str(exc)[:300]}")


class LayerProbe(ProbeBase):
    """The layer-level checks of one verify_layer run, read for Keras (the torch and Flax probes
    override what their frameworks do differently)."""

    def inference_identity(self, layer) -> Check:
        results = {
            "training=False": self.identical(self.call(layer, False)),
            "training omitted": self.identical(self.call(layer, None)),
            **{f"training=False, {k}": ok for k, ok in self.small_batch_identity(layer, False).items()},
        }
        model = self.model_of(layer)
        keras = self.keras_of(layer)
        if model is not None:
            out = np.asarray(model.predict(self.x_np, batch_size=self.shape[0], verbose=0)).astype(np.float64)
            results["model.predict"] = np.array_equal(out, self.x_np.astype(np.float64))
            rounded = self.x_np.astype(np.float32).astype(np.float64)
            if not results["model.predict"] and self.dtype == "float64" and np.array_equal(out, rounded):
                # Keras, not the layer: predict casts float64 inputs to the model's float32 policy
                results["model.predict"] = True
                self.findings.append(
                    Finding(
                        "keras_predict_float64",
                        "model.predict returned x rounded to float32: Keras casts float64 inputs to the model's "
                        "dtype policy (float32) before the layer; the layer itself returns x at inference",
                        True,
                    )
                )
            model.compile(loss="mse")
            results["model.evaluate"] = (
                float(model.evaluate(self.x_np, self.x_np, batch_size=self.shape[0], verbose=0)) == 0.0
            )
        bad = [k for k, ok in results.items() if not ok]
        return Check(
            "inference_identity",
            not bad,
            samples=self.x_np.size * len(results),
            observed="x unchanged by " + ", ".join(results) if not bad else f"x changed by {', '.join(bad)}",
            expected="x bit for bit at inference",
            values={k: bool(v) for k, v in results.items()},
            detail=""
            if not bad
            else f"the layer drops or perturbs at inference ({', '.join(bad)})"
            + ("" if keras is not None else "; no Keras model: predict/evaluate not tried"),
        )

    def mode_transitions(self, level) -> Check:
        layer = _make(self.make_layer, self.rate, self.seed + 11)
        self.call(layer, True)
        same = self.identical(self.call(layer, False))
        masks = [self.mask(self.call(layer, True)) for _ in range(2)]
        free, how = self.gradient_free_masks(layer)
        what = "the keep rate of 2 training calls after one inference call"
        if free:
            off = [m.all() for m in free]
            what += f", and of {len(free)} training call(s) with no gradient recorded ({how})"
            if any(off):
                what += f": {sum(off)} of them kept every unit (dropout off without gradients: no MC dropout)"
        return self.rate_check(
            "mode_transitions",
            masks + free,
            level,
            what,
            "" if same else "the inference call between training calls changed x",
        )

    def fit(self, level) -> Check:
        keras = self.keras_of(_make(self.make_layer, self.rate, self.seed + 13))
        if keras is None:
            return Check("fit", None, "statistical", detail="not a Keras layer: no model.fit to run it in")
        x = self.x_np
        layer = _make(self.make_layer, self.rate, self.seed + 13)
        model = _recorder(self, keras, layer)
        model.compile(optimizer="sgd", loss="mse")
        model.fit(
            self.backend.native(x), self.backend.native(x), batch_size=self.shape[0], epochs=1, verbose=0, shuffle=False
        )
        seen = np.asarray(
            self.backend.to_numpy(model.seen.numpy() if hasattr(model.seen, "numpy") else model.seen.value)
        )
        self.samples += seen.size
        return self.rate_check("fit", [self.mask(seen)], level, "the keep rate of the layer's output inside model.fit")

    def instances(self, level) -> Check:
        a, b = (_make(self.make_layer, self.rate, None) for _ in range(2))
        pairs = [(self.mask(self.call(a, True)), self.mask(self.call(b, True)))]
        keras = self.keras_of(a)
        if keras is not None:  # two unseeded layers in one model
            c, d = (_make(self.make_layer, self.rate, None) for _ in range(2))
            inp = keras.Input(shape=self.shape[1:], dtype=self.dtype)
            model = keras.Model(inp, [c(inp), d(inp)])
            outs = model(self.x, training=True)
            pairs.append(tuple(self.mask(np.asarray(o)) for o in outs))
        s1, s2 = (_make(self.make_layer, self.rate, self.seed + 19) for _ in range(2))
        same = np.mean(self.mask(self.call(s1, True)) == self.mask(self.call(s2, True)))
        self.findings.append(
            Finding(
                "same_seed_layers",
                f"{_name(s1)}: two layers made with one seed draw "
                + ("identical masks" if same == 1.0 else f"masks that agree at {same:.4f}"),
                float(same),
            )
        )
        if self.kind == "gaussian":
            return self.noise_correlation(
                "instances", [(self.call(a, True), self.call(b, True))], level, "two unseeded layers"
            )
        return self.independence("instances", pairs, level, "two unseeded layers; two unseeded layers in one model")

    def independence(self, name, pairs, level, what) -> Check:
        """Pairs of masks that must be independent: Fisher's exact test each, Bonferroni."""
        results = []
        for m1, m2 in pairs:
            t = [int(np.count_nonzero(m1 & m2)), int(np.count_nonzero(m1)), int(np.count_nonzero(m2)), m1.size]
            results.append(fisher(t))
        p = min(1.0, min(r[0] for r in results) * len(results))
        return Check(
            name,
            True,
            "statistical",
            p,
            level,
            sum(m.size for pair in pairs for m in pair),
            observed="agreement " + ", ".join(f"{r[1]:.6g}" for r in results),
            expected=f"{self.keep**2 + (1 - self.keep) ** 2:.6g} = p^2 + q^2 (independent masks)",
            detail=f"{what}; Fisher exact, Bonferroni",
            values={"agreement": [r[1] for r in results]},
        )

    def replicas(self, n, level) -> Check:
        if self.framework != "tensorflow":
            return Check(
                "replicas", None, "statistical", detail=f"not run on {self.framework}: MirroredStrategy is TensorFlow's"
            )
        return _mirrored_replicas(self, n, level)

    def noise_correlation(self, name, pairs, level, what) -> Check:
        """Gaussian dropout: the noises n = y / x of two outputs are independent (Pearson's r,
        exact under normality; Bonferroni over the pairs)."""
        from scipy import stats

        xv = self.x_np.astype(np.float64).ravel()
        rs = [stats.pearsonr(a.astype(np.float64).ravel() / xv, b.astype(np.float64).ravel() / xv) for a, b in pairs]
        p = min(1.0, min(float(r[1]) for r in rs) * len(rs))
        return Check(
            name,
            True,
            "statistical",
            p,
            level,
            sum(a.size for a, _ in pairs),
            observed="noise correlation " + ", ".join(f"{float(r[0]):.4g}" for r in rs),
            expected="0 (independent noise)",
            detail=f"{what}; Pearson's r, Bonferroni",
            values={"correlation": [float(r[0]) for r in rs]},
        )

    def config_round_trip(self, level) -> Check:
        layer = _make(self.make_layer, self.rate, self.seed + 23)
        keras = self.keras_of(layer)
        if keras is None or not hasattr(layer, "get_config"):
            return Check("config_round_trip", None, "statistical", detail="not a Keras layer: no config to round-trip")
        want = {k: layer.get_config().get(k) for k in ("rate", "noise_shape", "seed")}
        again = type(layer).from_config(layer.get_config())
        problems = [
            f"from_config: {k} {v!r} -> {again.get_config().get(k)!r}"
            for k, v in want.items()
            if again.get_config().get(k) != v
        ]
        model = keras.Sequential([keras.Input(shape=self.shape[1:], dtype=self.dtype), layer])
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/m.keras"
            try:
                model.save(path)
                loaded = keras.models.load_model(path)
            except Exception as exc:  # an older Keras without .keras files, an unregistered class
                return Check(
                    "config_round_trip",
                    None if not problems else False,
                    "statistical",
                    detail="; ".join(problems + [f"save/load failed: {type(exc).__name__}: {exc}"]),
                )
        reloaded = loaded.layers[-1]
        problems += [
            f"saved and loaded: {k} {v!r} -> {reloaded.get_config().get(k)!r}"
            for k, v in want.items()
            if reloaded.get_config().get(k) != v
        ]
        return self.reloaded_check(
            reloaded, "reloaded layer", problems, f"rate, noise_shape, seed kept ({want})", level
        )

    def reloaded_check(self, layer, what, problems, kept, level) -> Check:
        """config_round_trip's verdict on a reloaded layer: identity at inference, its keep rate,
        and the settings problems found before."""
        if not self.identical(self.call(layer, False)):
            problems.append(f"the {what} changes x at inference")
        check = self.rate_check(
            "config_round_trip",
            [self.mask(self.call(layer, True))],
            level,
            f"the {what}'s keep rate",
            "; ".join(problems),
        )
        check.expected = f"{kept}; " + check.expected
        return check

    @staticmethod
    def keras_of(layer):
        module = type(layer).__module__.split(".")[0]
        if module not in ("keras", "tf_keras"):
            for base in type(layer).__mro__:
                if base.__module__.split(".")[0] in ("keras", "tf_keras"):
                    module = base.__module__.split(".")[0]
                    break
            else:
                return None
        import importlib

        return importlib.import_module(module)

    def model_of(self, layer):
        keras = self.keras_of(layer)
        if keras is None:
            return None
        return keras.Sequential([keras.Input(shape=self.shape[1:], dtype=self.dtype), layer])


def _recorder(probe, keras, layer):
    """A model that stores the layer's output of the last training step in a variable:
    tf.Variable on TensorFlow (tf_keras has no keras.ops), a Keras variable elsewhere."""
    x, dtype = probe.x_np, probe.x_np.dtype.name
    if probe.framework == "tensorflow":
        tf = probe.tf

        def store(model):
            return tf.Variable(tf.zeros(x.shape, dtype=dtype), trainable=False)

        def zero(y):
            return tf.cast(0.0, y.dtype)
    else:

        def store(model):
            return model.add_weight(shape=x.shape, initializer="zeros", dtype=dtype, trainable=False)

        def zero(y):
            return keras.ops.cast(0.0, y.dtype)

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.drop = layer
            self.seen = store(self)
            self.w = self.add_weight(shape=(), initializer="zeros", dtype=dtype)

        def call(self, t, training=None):
            y = self.drop(t, training=training)
            self.seen.assign(y)
            return y + zero(y) * self.w

    return Recorder()


def _mirrored_replicas(probe, n, level) -> Check:
    """The layer in one MirroredStrategy step over n logical CPUs: replica masks independent."""
    tf = probe.tf
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < n:
        return Check(
            "replicas",
            None,
            "statistical",
            detail=f"{len(devices)} logical CPU device(s), {n} needed: call "
            f"dropout_stats.use_logical_cpus({n}) before TensorFlow runs anything",
        )
    strategy = tf.distribute.MirroredStrategy(devices[:n])
    with strategy.scope():
        layer = _make(probe.make_layer, probe.rate, probe.seed + 17)
    out = strategy.run(lambda t: layer(t, training=True), args=(probe.x,))
    outputs = [np.asarray(v.numpy()) for v in strategy.experimental_local_results(out)]
    if probe.kind == "gaussian":
        return probe.noise_correlation(
            "replicas",
            [(outputs[0], o) for o in outputs[1:]],
            level,
            f"replicas of one strategy.run step over {n} logical CPUs",
        )
    masks = [probe.mask(o) for o in outputs]
    probe.samples += sum(m.size for m in masks)
    agree = [float(np.mean(masks[0] == m)) for m in masks[1:]]
    tables = [
        [int(np.count_nonzero(masks[0] & m)), int(np.count_nonzero(masks[0])), int(np.count_nonzero(m)), m.size]
        for m in masks[1:]
    ]
    p = min(1.0, min(fisher(t)[0] for t in tables) * len(tables))
    indep = probe.keep**2 + (1 - probe.keep) ** 2
    worst = min(agree, key=lambda a: -abs(a - indep))
    agree_n = int(round(worst * masks[0].size))
    p_indep, p_same = rate_test(agree_n, masks[0].size, indep).pvalue, 1.0 if worst == 1.0 else 0.0
    probe.findings.append(
        Finding(
            "replicas",
            f"{_name(layer)} under MirroredStrategy over {n} logical CPUs: replica masks agree at {worst:.4f}",
            worst,
            measured=f"exact p against independence {p_indep:.3g}, against identity {p_same:g}",
        )
    )
    return Check(
        "replicas",
        True,
        "statistical",
        p,
        level,
        sum(m.size for m in masks),
        observed=f"agreement with replica 0: {', '.join(f'{a:.6g}' for a in agree)}",
        expected=f"{indep:.6g} = p^2 + q^2 (independent masks)",
        detail=(
            f"one step of strategy.run on {n} replicas; exact binomial p of the agreement against "
            f"independence {p_indep:.3g}, against identical masks {p_same:g}; Fisher exact"
        ),
        values={"agreement": agree, "p_vs_independent": p_indep, "p_vs_identical": p_same},
    )
