"""The one import point of torchvision and timm: the fallback for a torchvision whose compiled operators cannot load
beside this torch (forced in a fresh interpreter), and the error naming the extra when it is absent."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from metalab.utils.torchvision_compat import import_timm, import_torchvision

SRC = Path(__file__).resolve().parents[2] / "src"

# torchvision's C extension refused as a build for another torch refuses to load; then everything else must work
FORCED_FALLBACK = textwrap.dedent("""
    import warnings
    import torch

    load_library = torch.ops.load_library
    def refuse(path):
        if "torchvision" in str(path):
            raise OSError(f"{path}: undefined symbol (simulated: built for another torch)")
        return load_library(path)
    torch.ops.load_library = refuse

    from metalab.utils.torchvision_compat import define_missing_schemas, import_transforms
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v2 = import_transforms()
    import torchvision
    assert not torchvision.extension._has_ops()
    assert define_missing_schemas() == []  # both schemas defined once
    image = torch.rand(3, 16, 16)
    assert v2.ColorJitter(0.4, 0.4, 0.4)(image).shape == image.shape
    assert torchvision.models.resnet18(num_classes=3).eval()(image[None]).shape == (1, 3)
    messages = [str(w.message) for w in caught if "compiled operators did not load" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    print("fallback ok")
""")


def test_a_torchvision_whose_compiled_ops_do_not_load_still_gives_models_and_transforms() -> None:
    done = subprocess.run([sys.executable, "-c", FORCED_FALLBACK], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "fallback ok" in done.stdout, done.stderr[-3000:]


def test_an_absent_library_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # what an uninstalled package looks like to import
    with pytest.raises(ImportError, match=r"torchvision is not installed.*pip install 'metalab\[vision\]'"):
        import_torchvision()
    with pytest.raises(ImportError, match="torchvision is not installed"):
        import_timm()
