"""Reading the official release files of a data set without trusting them: tar members and pickles.

Releases come as tar archives (CIFAR-100, CUB-200-2011) and Python pickles (CIFAR-100's batches,
tiered-ImageNet's label and image files). Members are read straight from the archive (no extraction, so no
half-extracted folder is ever left), and pickles are loaded with an allow-list of the types these releases
hold (numpy arrays, lists, dicts, strings), so a tampered file cannot run code.
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

#: (module, name) of the globals a data-set pickle may reference: numpy's array reconstruction and, in pickles
#: written by Python 2, the codec call that carries byte strings.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("collections", "OrderedDict"),
}


class DamagedArchiveError(ValueError):
    """A release file is truncated or corrupt; the message names it and how to replace it."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a data-set pickle holds only arrays, "
                                     f"lists, dicts and strings")


def load_data_pickle(file: IO[bytes], label: str, fix: str) -> Any:
    """Unpickle a data-set file (``encoding="latin1"``: Python 2 pickles of byte strings load as numpy expects)
    with the allow-list above. A truncated or foreign file raises :class:`DamagedArchiveError` naming ``label``
    and saying ``fix``."""
    try:
        return _DataUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise DamagedArchiveError(f"{label} cannot be read ({type(error).__name__}: {error}); it is truncated, "
                                  f"corrupt or not the official file. {fix}") from error


def tar_members(archive: Path, wanted: Callable[[str], bool], fix: str) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each regular file of a tar archive (any compression) whose name ``wanted`` accepts,
    in archive order. A truncated or corrupt archive raises :class:`DamagedArchiveError` naming it and ``fix``."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if not member.isfile() or not wanted(member.name):
                    continue
                extracted = tar.extractfile(member)
                if extracted is None:
                    continue
                data = extracted.read()
                if len(data) != member.size:
                    raise EOFError(f"{member.name} is cut short")
                yield member.name, data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DamagedArchiveError(f"{archive} cannot be read to the end ({type(error).__name__}: {error}); it is "
                                  f"truncated or corrupt (an interrupted copy?). {fix}") from error


def pickle_from_bytes(data: bytes, label: str, fix: str) -> Any:
    """:func:`load_data_pickle` of bytes (a tar member)."""
    return load_data_pickle(io.BytesIO(data), label, fix)
