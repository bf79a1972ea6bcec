"""dropout-stats: audit the installed frameworks' dropout, verify an implementation, explain a count.

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or an output that could not be
written (one line, no traceback), 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM).

One module per command (audit, verify, explain, calibrate, matrix), the parser in ``_parser``,
output files in ``files``, plots in ``plots``, what they share in ``_common``.
"""

from __future__ import annotations

import sys

from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, RUN, UsageError, one_line, signals_stop
from ._parser import DESCRIPTION, DTYPES, FRAMEWORK_CHOICES, VERIFY_CONTRACT, build_parser
from .audit import cmd_audit
from .calibrate import cmd_calibrate
from .explain import cmd_explain, explain_text
from .files import check_output, write_atomically
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
        from ..battery import check_shapes  # loads scipy: only where a shape was given

        check_shapes(args.shape, args.noise_shape)


def _check_outputs(args) -> None:
    """Every output path of the command, checked before any work (see ``files.check_output``)."""
    targets = []
    for attr, option in (("json", "--json"), ("plot", "--plot"), ("output", "--output")):
        if getattr(args, attr, None) is not None:
            targets.append(check_output(getattr(args, attr), option))
    import os

    real = [os.path.realpath(t.real) for t in targets]
    for i, a in enumerate(targets):
        for j, b in enumerate(targets[:i]):
            if real[i] == real[j]:
                raise UsageError(f"{a.option} ({a.path}) is the same file as {b.option} ({b.path})")
    if targets and getattr(args, "files", None):  # matrix: never write the table over an input
        for path in args.files:
            if os.path.realpath(path) == real[0]:
                raise UsageError(f"{targets[0].option} ({targets[0].path}) is one of the input files")
    if getattr(args, "plot", None) is not None:
        require_matplotlib()
    RUN.pending = targets


def main(argv=None) -> int:
    RUN.reset()
    with signals_stop():
        try:
            code = _main(argv)
            sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
            return code
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: one line, no traceback
            code = 128 + getattr(exc, "signum", 2)
            try:
                print(one_line(RUN.stopped_line(exc)), file=sys.stderr)
            except (OSError, ValueError):  # stderr gone
                pass
            return code
        except BrokenPipeError:  # the reader went away (| head): nothing more to say
            import os

            try:  # what is still buffered goes nowhere, not to a traceback at exit
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass
            return EXIT_OK


def _main(argv) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _check_outputs(args)  # before the rest: cheap, and the costliest mistake to find late
        _check_common(args)
        return args.func(args)
    except UsageError as exc:
        print(f"dropout-stats: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (TypeError, ValueError) as exc:  # argument validation inside the library
        print(f"dropout-stats: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"dropout-stats: error: {args.command} ran out of memory", file=sys.stderr)
        return EXIT_USAGE
