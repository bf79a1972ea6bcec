"""The dropout-stats argument parser: its commands, their options and help."""

from __future__ import annotations

import argparse

from ..adapters import FRAMEWORKS, LIBRARIES
from ._common import count, probability, shape
from .audit import cmd_audit
from .calibrate import cmd_calibrate
from .explain import cmd_explain
from .matrix import cmd_matrix
from .verify import cmd_verify

DESCRIPTION = "dropout-stats: audit the installed frameworks' dropout, verify an implementation, explain a count."
DTYPES = ["float16", "bfloat16", "float32", "float64"]
FRAMEWORK_CHOICES = [fw for fw in FRAMEWORKS if fw not in LIBRARIES]  # verify() entry points (calibrate)
AUDIT_FRAMEWORKS = list(FRAMEWORKS)  # the audit also takes the libraries on torch, when named
VERIFY_CONTRACT = """\
MODULE:FUNCTION names a dropout function (MODULE is imported from the working folder):
  stateless (default):  fn(x, rate, seed, noise_shape=None) -> y
      seed: TensorFlow, an int32 tensor of shape [2]; numpy, a tuple of two ints
      (same seed, same output; as tf.nn.experimental.stateless_dropout)
  stateful (--stateful): fn(x, rate, noise_shape=None) -> y
      fresh randomness on every call (as tf.nn.dropout)
y has x's shape and dtype; dropped values are 0, kept ones x / (1 - rate).
exit codes: 0 every check passed, 1 a check failed, 2 bad usage."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dropout-stats", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command")
    _audit_parser(sub)
    _verify_parser(sub)
    _calibrate_parser(sub)

    m = sub.add_parser(
        "matrix", help="merge audit JSON files (TF releases, JAX, Keras on JAX, PyTorch) into a markdown table"
    )
    m.add_argument("files", nargs="+", metavar="AUDIT.json", help="files written by dropout-stats audit --json")
    m.add_argument("-o", "--output", metavar="FILE.md", help="write the table here (default: print it)")
    m.set_defaults(func=cmd_matrix)

    e = sub.add_parser("explain", help="why Dropout(rate) on N units does not zero exactly rate*N of them")
    e.add_argument(
        "--units", type=count("units"), required=True, metavar="N", help="units in one call, an integer >= 1 (1e9 too)"
    )
    e.add_argument("--rate", type=probability("rate"), required=True, metavar="R", help="the rate, in [0, 1)")
    e.add_argument("--dtype", default="float32", metavar="DTYPE", help=f"one of {', '.join(DTYPES)} (default float32)")
    e.add_argument(
        "--observed", type=count("observed"), metavar="K", help="zeros you saw in one call, an integer in [0, N]"
    )
    e.add_argument(
        "--framework",
        choices=["tensorflow", "jax", "torch", "numpy"],
        default="tensorflow",
        help="whose dropout: its exact keep probability in --dtype (default tensorflow)",
    )
    e.add_argument("--plot", metavar="FILE", help="also write a PNG of the distribution of zeros")
    e.set_defaults(func=cmd_explain)
    return p


def _audit_parser(sub) -> None:
    a = sub.add_parser(
        "audit",
        help="verify every dropout entry point of the installed frameworks",
        description="Runs verify() on every dropout entry point of the installed frameworks (TensorFlow "
        "and Keras: eagerly, in tf.function and under jit_compile; JAX and Flax: eagerly "
        "and under jax.jit; PyTorch: eagerly and F.dropout under torch.compile), in every "
        "float dtype each supports; prints a table, the failures with their diagnosis, the "
        "findings and the backward pass under activation checkpointing, then the dropout layers "
        "in a model (Keras, Flax NNX, torch modules), the recurrent layers (Keras) and the "
        "attention layers (Keras, torch).  Keras 3 on JAX: --framework keras-jax, in a run "
        "of its own.  Exit codes: 0 all passed, 1 a check failed, 2 bad usage.",
    )
    a.add_argument(
        "--framework",
        nargs="+",
        choices=AUDIT_FRAMEWORKS,
        metavar="NAME",
        help=f"frameworks to audit, any of {', '.join(AUDIT_FRAMEWORKS)} (default: every one installed; "
        "keras-jax only where TensorFlow is not; timm, torchvision, transformers only when named)",
    )
    a.add_argument(
        "--quick",
        action="store_true",
        help="eager mode, float32 and bfloat16 only (32 s here with TensorFlow, JAX and PyTorch)",
    )
    a.add_argument(
        "--rate",
        type=probability("rate"),
        default=0.2,
        metavar="R",
        help="the dropout rate, a number in [0, 1) (default 0.2)",
    )
    a.add_argument(
        "--dtypes",
        nargs="+",
        choices=DTYPES,
        metavar="DTYPE",
        help=f"dtypes to audit, any of {', '.join(DTYPES)} (default: all four; --quick: float32 bfloat16)",
    )
    a.add_argument("--seed", type=int, default=0, metavar="S", help="the base seed, an integer >= 0 (default 0)")
    a.add_argument(
        "--false-fail-rate",
        type=probability("false-fail-rate"),
        default=1e-6,
        metavar="A",
        help="the false-fail budget of each configuration, in (0, 1) (default 1e-6)",
    )
    a.add_argument("--json", metavar="FILE", help="also write the whole audit as JSON (schema: docs/json.md)")
    a.add_argument(
        "--plot",
        metavar="FILE",
        help="also write a PNG: each run's keep-fraction z-score against its "
        "draws, with the band a correct implementation stays in",
    )
    a.set_defaults(func=cmd_audit)


def _verify_parser(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    v = sub.add_parser("verify", help="verify MODULE:FUNCTION", description=VERIFY_CONTRACT, formatter_class=fmt)
    v.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. mypkg.layers:dropout")
    v.add_argument("--stateful", action="store_true", help="fn(x, rate, noise_shape=None), like tf.nn.dropout")
    v.add_argument(
        "--rate",
        type=probability("rate"),
        default=0.2,
        metavar="R",
        help="the dropout rate, a number in [0, 1) (default 0.2)",
    )
    v.add_argument("--dtype", default="float32", metavar="DTYPE", help=f"one of {', '.join(DTYPES)} (default float32)")
    v.add_argument("--shape", type=shape, metavar="D0,D1,...", help="the input shape (default 64,4096)")
    v.add_argument(
        "--noise-shape",
        type=shape,
        metavar="D0,D1,...",
        help="the noise shape, broadcastable to --shape (needs --shape)",
    )
    v.add_argument(
        "--seed", type=int, default=0, metavar="S", help="the seed, an integer in [0, 2**31 - 1) (default 0)"
    )
    v.add_argument(
        "--false-fail-rate",
        type=probability("false-fail-rate"),
        default=1e-6,
        metavar="A",
        help="the chance a correct implementation fails the run, in (0, 1) (default 1e-6)",
    )
    v.add_argument("--no-reference", action="store_true", help="an RNG of its own: skip the bit-exact mechanism check")
    v.add_argument(
        "--call-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="stop the run when one call of fn takes longer (default 300)",
    )
    v.add_argument(
        "--drift",
        type=probability("drift"),
        default=None,
        metavar="D",
        help="long mode: after the main sequence, call fn until a change of the keep probability by D "
        "during the run would show (and repeats of masks that many calls apart)",
    )
    v.add_argument(
        "--exact-scale",
        action="store_true",
        help="kept values bit-identical to one of the backend's formulas (default: within the rounding bound "
        "of x/(1-rate))",
    )
    v.add_argument(
        "--mechanism",
        choices=["auto", "threshold", "none"],
        default="auto",
        help="threshold: require masks that nest across rates (one uniform compared with the rate); none: "
        "report it; auto (default): require it where a reference stream is checked",
    )
    v.add_argument(
        "--backend",
        choices=["numpy", "tensorflow", "jax", "torch", "keras"],
        help="the framework fn runs on; keras: the one Keras 3 runs on (default: told from the type "
        "of fn's first output)",
    )
    v.add_argument(
        "--no-backward", action="store_true", help="skip the gradient checks (backward_mask, backward_scale)"
    )
    v.add_argument(
        "--recompute",
        nargs="?",
        const=True,
        default=False,
        metavar="WRAPPER",
        help="check the gradient with fn rematerialised: the backend's first wrapper (tf.recompute_grad, "
        "jax.checkpoint, torch.utils.checkpoint) or the one named: keras.remat, "
        "'torch.utils.checkpoint(preserve_rng_state=False)'; put it after MODULE:FUNCTION",
    )
    v.add_argument("--json", metavar="FILE", help="also write the whole report as JSON (schema: docs/json.md)")
    v.set_defaults(func=cmd_verify)


CALIBRATE_DESCRIPTION = """\
Runs verify() on a correct implementation over seeds S, S+1, ..., S+N-1 and reports the false
alarms with their exact (Clopper-Pearson) upper bound and each check's p-values against uniform.
The target: a framework entry point of the audit (--entry-point, --framework, --mode; default
tf.nn.experimental.stateless_dropout, eager) or --fn MODULE:FUNCTION.  Runs execute on Dask
(pip install 'dropout-stats[distributed]'): a local cluster of one worker process per core by
default, --workers N, or --scheduler ADDRESS; without Dask, or with --workers 0, serially here.
--store FILE keeps every run (SQLite): the same command resumes a killed run, and a larger --runs
extends it.  Same seeds, same result, whatever ran them.  Exit codes: 0 consistent with the
design, 1 the design exceeded or a check's p-values too small, 2 bad usage.  See docs/calibrating.md."""


def _calibrate_parser(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    c = sub.add_parser(
        "calibrate",
        help="measure verify()'s false-alarm rate on any implementation, serially or on Dask",
        description=CALIBRATE_DESCRIPTION,
        formatter_class=fmt,
    )
    c.add_argument(
        "--runs", type=count("runs"), default=200, metavar="N", help="correct runs, an integer >= 1 (default 200)"
    )
    c.add_argument("--seed", type=int, default=0, metavar="S", help="the first seed; run i has seed S + i (default 0)")
    c.add_argument(
        "--false-fail-rate",
        type=probability("false-fail-rate"),
        default=0.05,
        metavar="A",
        help="the budget to calibrate at, in (0, 1) (default 0.05: informative counts; 1e-6: verify()'s default)",
    )
    c.add_argument(
        "--false-pass-rate",
        type=probability("false-pass-rate"),
        default=1e-3,
        metavar="B",
        help="verify()'s false-pass rate, in (0, 1) (default 1e-3)",
    )
    g = c.add_argument_group("what to calibrate")
    g.add_argument(
        "--entry-point",
        metavar="NAME",
        help="an entry point of the audit (default tf.nn.experimental.stateless_dropout); a wrong one lists them",
    )
    g.add_argument("--framework", choices=FRAMEWORK_CHOICES, help="the entry point's framework (default tensorflow)")
    g.add_argument("--mode", metavar="MODE", help="the entry point's mode: eager, function, jit, ... (default eager)")
    g.add_argument("--fn", metavar="MODULE:FUNCTION", help="a dropout function (the contract of verify)")
    g.add_argument("--stateful", action="store_true", help="--fn is fn(x, rate, noise_shape=None)")
    g.add_argument(
        "--backend", choices=["numpy", "tensorflow", "jax", "torch", "keras"], help="--fn's framework (default: told)"
    )
    g.add_argument(
        "--reference",
        choices=["auto", "none", "tensorflow", "tensorflow-xla", "jax", "torch"],
        default="auto",
        help="--fn's bit-exact stream to check the mask against (default auto: the backend's own)",
    )
    g.add_argument(
        "--rate", type=probability("rate"), default=0.2, metavar="R", help="the dropout rate, in [0, 1) (default 0.2)"
    )
    g.add_argument("--dtype", default="float32", metavar="DTYPE", help=f"one of {', '.join(DTYPES)} (default float32)")
    g.add_argument("--shape", type=shape, metavar="D0,D1,...", help="the input shape (default: the battery's)")
    g.add_argument("--noise-shape", type=shape, metavar="D0,D1,...", help="the noise shape (needs --shape)")
    g.add_argument("--mechanism", choices=["auto", "threshold", "none"], default="auto", help="as for verify")
    g.add_argument("--exact-scale", action="store_true", help="as for verify")
    g.add_argument("--no-backward", action="store_true", help="skip the gradient checks")
    r = c.add_argument_group("where to run")
    r.add_argument(
        "--workers",
        type=count("workers"),
        metavar="N",
        help="a local Dask cluster of N worker processes; 0: serially in this process (default: one per core "
        "with Dask, serially without)",
    )
    r.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    r.add_argument("--chunk", type=count("chunk"), metavar="N", help="runs per Dask task (default: from the runs)")
    r.add_argument("--store", metavar="FILE", help="keep every run in this SQLite file; the same command resumes")
    o = c.add_argument_group("output")
    o.add_argument(
        "--confidence",
        type=probability("confidence"),
        default=0.95,
        metavar="C",
        help="of the false-alarm bound, in (0, 1) (default 0.95)",
    )
    o.add_argument("--json", metavar="FILE", help="also write the whole result as JSON")
    o.add_argument("--plot", metavar="FILE", help="also write a PNG: each check's p-value histogram and QQ plot")
    o.add_argument(
        "--power-runs",
        type=count("power-runs"),
        default=0,
        metavar="N",
        help="also run each defect of the TensorFlow corpus N times at 1e-6 (default 0: skip)",
    )
    c.set_defaults(func=cmd_calibrate)
