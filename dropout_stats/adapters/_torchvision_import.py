"""Import torchvision beside a torch whose build its compiled ops do not match.

PyPI's torchvision 0.28 for Linux is a CUDA build: beside the CPU torch wheel its ``_C.so`` does not
load, and ``import torchvision`` raises ``RuntimeError: operator torchvision::nms does not exist``
(``torchvision/_meta_registrations.py`` registers fakes for ``torchvision::nms`` and ``qnms``
whether or not the ops loaded; pytorch/vision#9086, not in 0.28.0).  timm imports torchvision
(``timm/layers/_fx.py`` catches only ImportError), and so does transformers, so both fail the same
way.  ``import_torchvision()`` imports it plainly and, only on that error, defines the two
operators' schemas (no kernel) and imports again: torchvision's detection ops stay unavailable
(``torchvision.extension._has_ops()`` is False), its pure-Python ops (``drop_block2d``,
``drop_block3d``, ``stochastic_depth``) run.  Where the ops load (a matching build) nothing is
defined.
"""

from __future__ import annotations

import importlib.util
import sys

# the schemas torchvision's C++ library would define; kept alive here, as the registrations are
# dropped when their Library object is collected
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = []
WORKAROUND = "torchvision's compiled ops did not load beside this torch: nms/qnms schemas defined (no kernels)"


def _missing_op_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and any(
        f"operator torchvision::{op} does not exist" in str(exc) for op in _SCHEMAS
    )


def import_torchvision():
    """torchvision, imported (with the workaround where its ops do not load); None where it is not
    installed.  Call before the first import of timm or transformers."""
    if "torchvision" in sys.modules and getattr(sys.modules["torchvision"], "__version__", None):
        return sys.modules["torchvision"]
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision
    except RuntimeError as exc:
        if not _missing_op_error(exc):
            raise
        _forget_torchvision()
        _define_schemas()
        import torchvision
    return torchvision


def workaround_applied() -> bool:
    """True where import_torchvision() had to define torchvision's operator schemas."""
    return bool(_LIBRARY)


def _forget_torchvision() -> None:
    """A failed import leaves torchvision's half-initialised modules behind: the retry needs them gone."""
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_schemas() -> None:
    import torch

    if _LIBRARY:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, op):
            lib.define(schema)
    _LIBRARY.append(lib)
