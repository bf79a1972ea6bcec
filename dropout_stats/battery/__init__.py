"""The battery: verify(fn) proves or refutes a dropout implementation.

Layout (a new check is a module in ``checks/`` and a line in ``checks.FAMILIES``; a new
framework is a module in ``dropout_stats/backends``):

* ``config``  - arguments validated in one place, the design that follows from them;
* ``runner``  - the calls, the worker thread, the budget split, the Report;
* ``kinds``   - plain and alpha dropout: the input, reading the kept set, their families;
* ``checks/`` - one module per family of checks, each opening with what it detects;
* ``api``     - verify(), verify_alpha_dropout(); ``gaussian`` - verify_gaussian_dropout();
* ``layers``  - verify_layer(): a dropout layer as a model uses it (training flag, fit, replicas);
* ``recurrent`` - verify_recurrent(): the input and recurrent masks inside SimpleRNN, GRU, LSTM;
* ``attention`` - verify_attention(): the dropout on attention probabilities;
* ``mask_repeats`` - exact repeats of mask rows at any distance, for attention and recurrent layers;
* ``drop_path``, ``dropblock`` - verify_drop_path(), verify_dropblock(): structured dropout.

Every statistical check is sized from (false_fail_rate, false_pass_rate, discrepancy) and the
run's false-fail budget is split across them: the sequential keep-fraction test gets alpha / m
up front (Bonferroni) and the p-value checks share the rest by Holm's step-down.  So a correct
implementation fails a run with probability at most ``false_fail_rate``.  Exact checks
(mechanism, nesting, scale, determinism, noise-shape consistency) cannot fail by chance.
"""

from ..report import Check, Finding, Report
from .api import verify, verify_alpha_dropout
from .attention import verify_attention
from .config import DEFAULT_SHAPE, check_shapes
from .drop_path import verify_drop_path
from .dropblock import verify_dropblock
from .gaussian import verify_gaussian_dropout
from .layers import use_logical_cpus, verify_layer
from .recurrent import verify_recurrent
from .runner import ContractError

__all__ = [
    "verify",
    "verify_alpha_dropout",
    "verify_gaussian_dropout",
    "verify_layer",
    "use_logical_cpus",
    "verify_recurrent",
    "verify_attention",
    "verify_drop_path",
    "verify_dropblock",
    "Report",
    "Check",
    "Finding",
    "DEFAULT_SHAPE",
    "check_shapes",
    "ContractError",
]
