"""The dropout-stats argument parser: its commands, their options and help."""

from __future__ import annotations

import argparse

from ._common import count, probability, shape
from .audit import cmd_audit
from .calibrate import cmd_calibrate
from .explain import cmd_explain
from .matrix import cmd_matrix
from .verify import cmd_verify

DESCRIPTION = "dropout-stats: audit the installed frameworks' dropout, verify an implementation, explain a count."
DTYPES = ["float16", "bfloat16", "float32", "float64"]
FRAMEWORK_CHOICES = ["tensorflow", "jax", "keras-jax", "torch"]
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
    c = sub.add_parser("calibrate", help="measure verify()'s false-alarm rate and the corpus' catch rates")
    c.add_argument(
        "--runs", type=count("runs"), default=200, metavar="N", help="correct runs, an integer >= 1 (default 200)"
    )
    c.add_argument(
        "--false-fail-rate",
        type=probability("false-fail-rate"),
        default=0.05,
        metavar="A",
        help="the budget to calibrate at, in (0, 1) (default 0.05: informative counts)",
    )
    c.add_argument(
        "--power-runs",
        type=count("power-runs"),
        default=5,
        metavar="N",
        help="runs per defect of the corpus, an integer >= 0 (0: skip; default 5)",
    )
    c.add_argument("--seed", type=int, default=0, metavar="S", help="the first seed (default 0)")
    c.set_defaults(func=cmd_calibrate)

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
        choices=FRAMEWORK_CHOICES,
        metavar="NAME",
        help=f"frameworks to audit, any of {', '.join(FRAMEWORK_CHOICES)} (default: every one installed; "
        "keras-jax only where TensorFlow is not)",
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
