"""metalab's compiled CPU kernels, built on first use with PyTorch's C++ extension tool.

The kernels are optional: every user of :func:`available` has a pure-PyTorch path computing the same
function, which runs when the build is impossible (no C++ compiler or ninja, a non-CPU build of
torch) or disabled with ``METALAB_NATIVE=0``. The first call compiles ``*.cpp`` of this folder (once: the
build is cached under ``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``, and rebuilt only
when the sources or flags change); later processes load the cached library in milliseconds. A failed build warns once, naming the reason, and the
fallback runs.

Kernels (``torch.ops.metalab_native``): ``patch_conv_pool`` and its backward
(:mod:`metalab.accel.patch_conv_pool`), ``batch_norm_relu_pool`` with its backward and double backward,
for channels-last and NCHW maps (:mod:`metalab.accel.batch_norm_relu_pool`), and ``nnpack_conv2d``, PyTorch's
bundled NNPACK on PyTorch's own threads (:mod:`metalab.accel.nnpack_conv`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import warnings
from pathlib import Path

import torch

ENV = "METALAB_NATIVE"
SOURCES = tuple(Path(__file__).with_name(name) for name in
                ("patch_conv_pool.cpp", "batch_norm_relu_pool.cpp", "batch_norm_relu_pool_planes.cpp",
                 "nnpack_conv.cpp"))

_state: dict[str, object] = {}


def _flags() -> list[str]:
    # The library is cached per CPU capability so that a home directory shared between machines never
    # loads AVX2 code on a CPU without it; the kernels' 32-byte vectors compile to SSE pairs otherwise.
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-fopenmp"]
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _ninja_on_path() -> None:
    """Put the ``ninja`` of the ``ninja`` package (a metalab dependency) first on PATH: PyTorch's build
    runs ``ninja`` from PATH, and a venv's bin directory is not on it unless the venv is activated."""
    try:
        import ninja
    except ImportError:
        return
    directory = getattr(ninja, "BIN_DIR", None)
    path = os.environ.get("PATH", "")
    if directory and directory not in path.split(os.pathsep):
        os.environ["PATH"] = directory + (os.pathsep + path if path else "")


def _build() -> None:
    from torch.utils import cpp_extension

    _ninja_on_path()
    # the name carries a hash of every source and header: PyTorch's cache notices changed sources, not headers
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sorted(Path(__file__).parent.glob("*.[ch]*")))
                            ).hexdigest()[:10]
    name = f"metalab_native_{torch.backends.cpu.get_cpu_capability().lower()}_{digest}"
    directory = Path(cpp_extension._get_build_directory(name, verbose=False))  # a private helper of PyTorch's
    built = directory / f"{name}.so"
    if not built.exists():
        print(f"metalab: compiling its CPU kernels into {directory} (once per machine and version, "
              f"under a minute; METALAB_NATIVE=0 skips them)", file=sys.stderr, flush=True)
    with _exclusive(directory / "metalab.flock"):
        # PyTorch marks a build in progress with a plain file named "lock" and waits, forever, while it
        # exists; a build that was killed leaves it behind. Under this flock (released by the kernel when
        # its holder dies) no other metalab process is building, so such a file is stale.
        stale = directory / "lock"
        if stale.exists():
            warnings.warn(f"metalab: removing {stale}, left by a build that did not finish", RuntimeWarning,
                          stacklevel=3)
            stale.unlink(missing_ok=True)
        cpp_extension.load(name=name, sources=[str(path) for path in SOURCES], extra_cflags=_flags(),
                           extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)


@contextlib.contextmanager
def _exclusive(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (one builder per machine; freed if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def available() -> bool:
    """True when the kernels are loaded (building them on the first call); False, after one warning,
    when they cannot be built, or when ``METALAB_NATIVE=0``."""
    if "ok" not in _state:
        if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            _state["ok"] = False
        else:
            try:
                _build()
                _state["ok"] = True
            except Exception as error:  # no compiler, no ninja, headers missing, ...
                _state["ok"] = False
                _state["error"] = error
                warnings.warn(f"metalab's compiled CPU kernels could not be built ({type(error).__name__}: "
                              f"{str(error).strip().splitlines()[-1] if str(error).strip() else error}); "
                              f"running the pure-PyTorch path, which is slower. Install a C++ compiler and "
                              f"ninja (pip install ninja) to build them, or set {ENV}=0 to silence this.",
                              RuntimeWarning, stacklevel=2)
    return bool(_state["ok"])


def require(what: str) -> None:
    """Load the kernels (building them on first use), or raise naming ``what`` and the fallback."""
    if not available():
        reason = _state.get("error")
        raise RuntimeError(f"{what} needs metalab's compiled CPU kernels, which are unavailable "
                           f"({'disabled by ' + ENV + '=0' if reason is None else reason}); use the PyTorch "
                           f"path (check metalab.accel.native.available() first)")
