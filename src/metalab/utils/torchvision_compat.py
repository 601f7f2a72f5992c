"""The one place that imports torchvision and timm (the ``vision`` extra), with a fallback for a torchvision wheel
whose compiled operators cannot load beside the installed torch.

torchvision's PyPI wheels carry a C extension (``_C.so``) built against one torch build; beside another one (e.g. the
CPU torch 2.13.0 wheel next to torchvision 0.28.0's CUDA extension) it does not load. torchvision then runs as pure
Python (``torchvision.extension._has_ops()`` is False and its meta registrations are skipped), except for two fake
(meta) registrations of ``torchvision::nms`` and ``torchvision::qnms``, which fail at import with
``RuntimeError: operator torchvision::nms does not exist``. Defining those two operator schemas (the ones in
torchvision's ``csrc/ops/nms.cpp`` and ``csrc/ops/quantized/cpu/qnms_kernel.cpp``) before the import lets the models
and transforms, which are pure Python, import and run; only the compiled operators (nms, roi_align, image decoding)
stay unavailable, which metalab does not use.
"""
from __future__ import annotations

import sys
import warnings
from types import ModuleType

import torch

#: the schemas of the operators torchvision's fake registrations need, as torchvision's C++ sources define them
MISSING_OPERATOR_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
#: what ``import torchvision`` raises when its C extension did not load beside this torch
MISSING_OPERATOR_ERROR = "operator torchvision::nms does not exist"
INSTALL_HINT = ("install the vision extra next to this torch: pip install 'metalab[vision]' (torchvision and timm; "
                "scripts/setup.sh pins the torchvision release that goes with its torch)")

#: the library that holds the schemas defined here (kept alive: dropping it removes the definitions)
_schemas: torch.library.Library | None = None


def operator_defined(name: str) -> bool:
    """Whether the operator ``torchvision::<name>`` exists (defined by torchvision's extension or by this module)."""
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def define_missing_schemas() -> list[str]:
    """Define the schemas of :data:`MISSING_OPERATOR_SCHEMAS` that no library defined yet; returns their names."""
    global _schemas
    missing = [name for name in MISSING_OPERATOR_SCHEMAS if not operator_defined(name)]
    if missing:
        if _schemas is None:
            _schemas = torch.library.Library("torchvision", "DEF")
        for name in missing:
            _schemas.define(MISSING_OPERATOR_SCHEMAS[name])
    return missing


def _purge(prefix: str) -> None:
    """Forget the half-imported modules of package ``prefix``, so that the next import runs them again."""
    for name in [name for name in sys.modules if name == prefix or name.startswith(prefix + ".")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """``import torchvision``, defining the two missing operator schemas (and warning once) when its C extension
    cannot load beside this torch; ``ImportError`` naming the extra to install when it is absent."""
    try:
        import torchvision
    except ImportError as error:
        raise ImportError(f"torchvision is not installed ({error}); {INSTALL_HINT}") from None
    except RuntimeError as error:
        if MISSING_OPERATOR_ERROR not in str(error):
            raise
        define_missing_schemas()
        _purge("torchvision")
        import torchvision

        warnings.warn(f"torchvision {torchvision.__version__}'s compiled operators did not load beside torch "
                      f"{torch.__version__} (a build for another torch); its models and transforms run as pure Python, "
                      f"its compiled ops (nms, roi_align, image decoding) are unavailable", stacklevel=2)
    return torchvision


def import_transforms() -> ModuleType:
    """torchvision's ``transforms.v2`` (through :func:`import_torchvision`)."""
    import_torchvision()
    from torchvision.transforms import v2

    return v2


def import_timm() -> ModuleType:
    """``import timm`` (after :func:`import_torchvision`, which timm imports); ``ImportError`` naming the extra."""
    import_torchvision()
    try:
        import timm
    except ImportError as error:
        raise ImportError(f"timm is not installed ({error}); {INSTALL_HINT}") from None
    return timm
