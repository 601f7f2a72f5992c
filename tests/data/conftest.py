"""Fixtures for the data tests: the real data root, an isolated cache, small generated Omniglot archives, a local
HTTP server (with range requests) for the download code."""
from __future__ import annotations

import functools
import io
import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


def _real_data_root() -> Path:
    env = os.environ.get("METALAB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real data root (``$METALAB_DATA`` or ../shared/data beside the checkout); skips when absent."""
    root = _real_data_root()
    if not (root / "omniglot" / "images_background_small1.zip").is_file():
        pytest.skip(f"real Omniglot data not found under {root} (set METALAB_DATA to a root with omniglot/*.zip)")
    return root


@pytest.fixture(scope="session")
def full_root(real_root: Path) -> Path:
    """The real data root, checked to hold the two full Omniglot archives."""
    for archive in ("images_background.zip", "images_evaluation.zip"):
        if not (real_root / "omniglot" / archive).is_file():
            pytest.skip(f"full Omniglot archive {real_root / 'omniglot' / archive} not found")
    return real_root


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty METALAB_CACHE for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("METALAB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir shared by the tests that need the full archives, so they are decoded at most once."""
    return tmp_path_factory.mktemp("omniglot-full-cache")


@pytest.fixture
def full_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METALAB_CACHE", str(session_cache))
    return session_cache


def drawing_png(seed: int, size: int = 105) -> bytes:
    """An Omniglot-like PNG: mode "1", black strokes on white."""
    image = Image.new("1", (size, size), 1)
    draw = ImageDraw.Draw(image)
    x = 10 + (seed * 7) % 60
    draw.line([(x, 10), (size - x // 2, size - 10)], fill=0, width=5)
    draw.rectangle([20, 20 + seed % 30, 40, 45 + seed % 30], outline=0, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_omniglot_zip(
    path: Path,
    top: str = "images_background",
    alphabets: tuple[str, ...] = ("Alpha", "Beta"),
    characters: int = 2,
    drawings: int = 3,
) -> Path:
    """A tiny archive in the official layout ``<top>/<Alphabet>/characterNN/XXXX_YY.png``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zipped:
        serial = 0
        for alphabet in alphabets:
            for c in range(1, characters + 1):
                serial += 1
                for d in range(1, drawings + 1):
                    zipped.writestr(f"{top}/{alphabet}/character{c:02d}/{serial:04d}_{d:02d}.png",
                                    drawing_png(serial * 31 + d))
    return path


@pytest.fixture
def make_zip():
    """The :func:`make_omniglot_zip` builder (a fixture, so test modules need not import conftest)."""
    return make_omniglot_zip


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves a folder; answers ``Range: bytes=N-`` with 206 Partial Content, as the data sets' hosts do.
    ``cut_after`` (class attribute, bytes): end every response early there (a dropped connection)."""

    cut_after: int | None = None

    def log_message(self, format: str, *args: object) -> None:  # no request log: keeps test output clean
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None and len(body) > self.cut_after:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of an HTTP server on 127.0.0.1 running in a thread."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def drop_connections(monkeypatch: pytest.MonkeyPatch):
    """``drop_connections(n)``: the test server ends every response after ``n`` bytes (None: never)."""
    def drop(after: int | None) -> None:
        monkeypatch.setattr(RangeHandler, "cut_after", after)
    return drop
