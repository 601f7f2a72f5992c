"""metalab's compiled CPU kernels, built on first use with PyTorch's C++ extension tool.

The kernels are optional: every user of :func:`available` has a pure-PyTorch path computing the same
function, which runs when the build is impossible (no C++ compiler or ninja, Windows, a non-CPU build of
torch) or disabled with ``METALAB_NATIVE=0``.

One build per source version and machine: the build directory (under ``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) is named by a hash of the sources, the compiler flags, the torch and Python
versions and the CPU capability, and holds its own copy of the sources, so its ``build.ninja`` names no
checkout. A finished build leaves a marker (``built``) beside the library; every later process, from any
checkout or virtual environment with the same sources and torch, loads that library in milliseconds, without
ninja and without the build lock. Only a process that has to compile takes the lock (an ``flock``, freed by the
kernel if its holder dies), and says so in one line.

Without the C++ compiler PyTorch would use (``$CXX``, default ``c++``), nothing is attempted: the first
process says so in one line and leaves a marker (``no-compiler``) in the build directory, later ones fall back
silently, and a compiler installed later is found by the next process. A build that fails otherwise (a
compile error, missing headers) leaves a marker (``failed``, holding the reason) so that later processes do not
spend the build's time again: each warns once, naming the reason and how to try again (delete the marker, or
set ``METALAB_NATIVE=rebuild``).

Kernels (``torch.ops.metalab_native``): ``patch_conv_pool`` and its backward
(:mod:`metalab.accel.patch_conv_pool`), ``batch_norm_relu_pool`` with its backward and double backward,
for channels-last and NCHW maps (:mod:`metalab.accel.batch_norm_relu_pool`), and ``nnpack_conv2d``, PyTorch's
bundled NNPACK on PyTorch's own threads (:mod:`metalab.accel.nnpack_conv`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # Windows: the kernels (GCC/Clang vector extensions, flock) are not built there
    fcntl = None  # type: ignore[assignment]  # a module or None: the checks below test for None

ENV = "METALAB_NATIVE"
HERE = Path(__file__).parent
SOURCES = tuple(HERE / name for name in
                ("patch_conv_pool.cpp", "batch_norm_relu_pool.cpp", "batch_norm_relu_pool_planes.cpp",
                 "nnpack_conv.cpp"))
#: written beside the library once it is built and loaded: later processes load it without building
BUILT = "built"
#: written in the build directory by the first process that found no compiler
NO_COMPILER = "no-compiler"
#: written in the build directory by a build that failed otherwise; holds the reason
FAILED = "failed"
#: the value of ``METALAB_NATIVE`` that tries a failed build again
REBUILD = "rebuild"

_state: dict[str, object] = {}


class CompilerNotFound(RuntimeError):
    """The C++ compiler PyTorch's extension tool would run is not on PATH."""


class FailedBefore(RuntimeError):
    """An earlier process's build of these sources failed; it is not tried again without being asked."""

    @classmethod
    def marked_by(cls, marker: Path) -> FailedBefore:
        return cls(f"an earlier build failed: {marker.read_text().strip()}; delete {marker} or set "
                   f"{ENV}={REBUILD} to try again")


def _flags() -> list[str]:
    # The library is cached per CPU capability so that a home directory shared between machines never
    # loads AVX2 code on a CPU without it; the kernels' 32-byte vectors compile to SSE pairs otherwise.
    capability = torch.backends.cpu.get_cpu_capability()
    flags = ["-O3", "-fopenmp"]
    if capability in ("AVX2", "AVX512"):
        flags += ["-mavx2", "-mfma"]
    return flags


def _source_files() -> list[Path]:
    """Every source and header of this folder (PyTorch's cache would notice changed sources, not headers)."""
    return sorted(HERE.glob("*.[ch]*"))


def library_name() -> str:
    """The build's name: a hash of what makes two builds interchangeable (sources, headers, flags, torch and
    Python versions), after the CPU capability; never a path."""
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(repr((_flags(), torch.__version__, sys.version_info[:2])).encode())
    return f"metalab_native_{torch.backends.cpu.get_cpu_capability().lower()}_{digest.hexdigest()[:10]}"


def build_directory() -> Path:
    """Where this version's library is built and cached (created if missing)."""
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(library_name(), verbose=False))  # a private helper of PyTorch's


def compiler() -> str:
    """The C++ compiler PyTorch's extension tool runs: ``$CXX``, else ``c++``."""
    from torch.utils import cpp_extension

    return cpp_extension.get_cxx_compiler()


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


def _load_built(directory: Path, name: str) -> bool:
    """Load the library a finished build left in ``directory``; False if there is none (or it won't load)."""
    library = directory / f"{name}.so"
    if not ((directory / BUILT).exists() and library.exists()):
        return False
    try:
        torch.ops.load_library(str(library))
    except OSError:
        return False  # e.g. a library truncated since: rebuilt under the lock
    return True


def _check_compiler(directory: Path) -> None:
    """Raise :class:`CompilerNotFound` when the compiler is not on PATH, saying so in one line the first time
    (the marker in ``directory`` remembers that it was said)."""
    cxx = compiler()
    marker = directory / NO_COMPILER
    if shutil.which(cxx) is not None:
        marker.unlink(missing_ok=True)
        return
    message = f"no C++ compiler: {cxx!r} " + ("($CXX) not found" if os.environ.get("CXX") else
                                               "not found on PATH (or name one in $CXX)")
    if not marker.exists() or marker.read_text() != cxx:
        print(f"metalab: {message}: running the pure-PyTorch path, which is slower. Install g++ or clang++ to "
              f"build the compiled CPU kernels, or set {ENV}=0 to skip them (said once per machine).",
              file=sys.stderr, flush=True)
        marker.write_text(cxx)
    raise CompilerNotFound(message)


def _build() -> None:
    """Load the kernels: the finished build of these sources if there is one, else compile it (under a lock)."""
    if fcntl is None:
        raise OSError("metalab's compiled kernels are built on Linux and macOS only (GCC or Clang)")
    name = library_name()
    directory = build_directory()
    if _load_built(directory, name):
        return
    _check_compiler(directory)
    failed = directory / FAILED
    retry = os.environ.get(ENV, "").strip().lower() == REBUILD
    if failed.exists() and not retry:
        raise FailedBefore.marked_by(failed)
    with _exclusive(directory / "metalab.flock"):
        if _load_built(directory, name):  # built by the process we waited for
            return
        if failed.exists() and not retry:  # failed in the process we waited for
            raise FailedBefore.marked_by(failed)
        print(f"metalab: compiling its CPU kernels into {directory} (once per machine and version, "
              f"under a minute; {ENV}=0 skips them)", file=sys.stderr, flush=True)
        # PyTorch marks a build in progress with a plain file named "lock" and waits, forever, while it
        # exists; a build that was killed leaves it behind. Under this flock no other metalab process is
        # building, so such a file is stale.
        stale = directory / "lock"
        if stale.exists():
            warnings.warn(f"metalab: removing {stale}, left by a build that did not finish", RuntimeWarning,
                          stacklevel=3)
            stale.unlink(missing_ok=True)
        (directory / BUILT).unlink(missing_ok=True)
        # The build reads its own copy of the sources, so that build.ninja is the same from every checkout.
        copies = directory / "src"
        copies.mkdir(exist_ok=True)
        for path in _source_files():
            copy = copies / path.name
            if not copy.exists() or copy.read_bytes() != path.read_bytes():
                shutil.copyfile(path, copy)
        from torch.utils import cpp_extension

        _ninja_on_path()
        try:
            cpp_extension.load(name=name, sources=[str(copies / path.name) for path in SOURCES],
                               extra_cflags=_flags(), extra_ldflags=["-fopenmp"], build_directory=str(directory),
                               is_python_module=False, verbose=False)
        except Exception as error:
            failed.write_text(f"{type(error).__name__}: {_last_line(error)}\n")
            raise
        failed.unlink(missing_ok=True)
        (directory / BUILT).write_text(f"{name} {torch.__version__}\n")


def _last_line(error: BaseException) -> str:
    """The last line of an error's message (a compiler's output ends with the line that says what failed)."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else repr(error)


@contextlib.contextmanager
def _exclusive(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (one builder per machine; freed if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"metalab: waiting for another process compiling the CPU kernels in {path.parent}",
                  file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def available() -> bool:
    """True when the kernels are loaded (building them on the first call); False when they cannot be built
    (after one warning, or one line per machine where no compiler is found), or when ``METALAB_NATIVE=0``."""
    if "ok" not in _state:
        if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            _state["ok"] = False
        else:
            try:
                _build()
                _state["ok"] = True
            except CompilerNotFound as error:  # said in one line by _check_compiler, the first time only
                _state["ok"] = False
                _state["error"] = error
            except Exception as error:  # no ninja, headers missing, a compile error, ...
                _state["ok"] = False
                _state["error"] = error
                if fcntl is not None:
                    warnings.warn(f"metalab's compiled CPU kernels could not be built ({type(error).__name__}: "
                                  f"{_last_line(error)}); "
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
