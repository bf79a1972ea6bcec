"""dropout-stats: audit the installed frameworks' dropout, verify an implementation, explain a count.

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage (a clear message, no traceback).

One module per command (audit, verify, explain, calibrate, matrix), the parser in ``_parser``,
output files in ``files``, plots in ``plots``, what they share in ``_common``.
"""

from __future__ import annotations

import sys

from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from ._parser import DESCRIPTION, DTYPES, FRAMEWORK_CHOICES, VERIFY_CONTRACT, build_parser
from .audit import cmd_audit
from .calibrate import cmd_calibrate
from .explain import cmd_explain, explain_text
from .files import require_folder, write_atomically
from .matrix import cmd_matrix, matrix_markdown
from .plots import require_matplotlib
from .verify import cmd_verify

__all__ = [
    "DESCRIPTION",
    "DTYPES",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "FRAMEWORK_CHOICES",
    "VERIFY_CONTRACT",
    "UsageError",
    "build_parser",
    "cmd_audit",
    "cmd_calibrate",
    "cmd_explain",
    "cmd_matrix",
    "cmd_verify",
    "explain_text",
    "main",
    "matrix_markdown",
    "write_atomically",
]


def _check_common(args) -> None:
    """The library's own checks on the options every command shares, before TensorFlow loads."""
    from .._checks import check_count, check_open_unit, check_rate
    from .._floats import dtype_name
    from ..battery import check_shapes

    if getattr(args, "rate", None) is not None:
        check_rate(args.rate)
    if getattr(args, "false_fail_rate", None) is not None:
        check_open_unit(args.false_fail_rate, "false_fail_rate")
    if getattr(args, "seed", None) is not None:
        if check_count(args.seed, "seed") >= 2**31 - 1:
            raise UsageError(f"seed ({args.seed}) must be < 2**31 - 1 (it is an int32 seed component)")
    if getattr(args, "dtype", None) is not None:
        dtype_name(args.dtype)
    if getattr(args, "shape", None) is not None or getattr(args, "noise_shape", None) is not None:
        check_shapes(args.shape, args.noise_shape)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _check_common(args)
        if getattr(args, "json", None):
            require_folder(args.json, "--json")
        if getattr(args, "plot", None):
            require_folder(args.plot, "--plot")  # before the work, not after printing it
            require_matplotlib()
        return args.func(args)
    except UsageError as exc:
        print(f"dropout-stats: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (files are written atomically)
        print("dropout-stats: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        sys.stderr.close()
        return EXIT_OK
    except (TypeError, ValueError) as exc:  # argument validation inside the library
        print(f"dropout-stats: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
