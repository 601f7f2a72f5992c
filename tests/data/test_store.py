"""Data root, cache dir, checksummed download against a local HTTP server, the `metalab data` report."""
from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import platformdirs
import pytest

from metalab.data.datasets import describe_data, download_dataset
from metalab.data.omniglot import load_omniglot
from metalab.data.store import ChecksumError, DataNotFoundError, cache_dir, download, resolve_data_root


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_resolve_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METALAB_DATA", raising=False)
    assert resolve_data_root() == Path(platformdirs.user_data_dir("metalab"))
    monkeypatch.setenv("METALAB_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "given") == tmp_path / "given"
    assert resolve_data_root(str(tmp_path / "given")) == tmp_path / "given"


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "a" / "cache"))
    assert cache_dir() == tmp_path / "a" / "cache" and cache_dir().is_dir()


def test_download_with_checksum(server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = server
    payload = b"metalab" * 50_000
    (served / "blob.bin").write_bytes(payload)
    destination = tmp_path / "out" / "blob.bin"
    assert download(f"{url}/blob.bin", destination, hashlib.md5(payload).hexdigest()) == destination
    assert destination.read_bytes() == payload
    assert sorted(p.name for p in destination.parent.iterdir()) == ["blob.bin"]
    download(f"{url}/blob.bin", tmp_path / "unchecked.bin", None)
    assert (tmp_path / "unchecked.bin").read_bytes() == payload


def test_download_wrong_checksum_leaves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = server
    (served / "blob.bin").write_bytes(b"some bytes")
    destination = tmp_path / "out" / "blob.bin"
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as error:
        download(f"{url}/blob.bin", destination, wrong)
    message = str(error.value)
    assert wrong in message and hashlib.md5(b"some bytes").hexdigest() in message
    assert isinstance(error.value, ValueError)
    assert list(destination.parent.iterdir()) == []  # neither the file nor a temp file


def test_download_unreachable(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "images_background.zip"
    url = f"http://127.0.0.1:{_closed_port()}/images_background.zip"
    with pytest.raises(DataNotFoundError) as error:
        download(url, destination, None, timeout=5)
    assert isinstance(error.value, FileNotFoundError)
    assert url in str(error.value) and str(destination) in str(error.value)
    assert list(destination.parent.iterdir()) == []


def test_download_missing_file(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DataNotFoundError, match="404"):
        download(f"{url}/absent.zip", tmp_path / "absent.zip", None, timeout=5)
    assert not (tmp_path / "absent.zip").exists()


def test_download_dataset_omniglot(
    server: tuple[str, Path], tmp_path: Path, make_zip, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = server
    archive = make_zip(served / "images_background.zip")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "root"
    paths = download_dataset("omniglot", root, base_url=url, checksums={"images_background.zip": md5})
    assert paths == [root / "omniglot" / "images_background.zip"]
    assert paths[0].read_bytes() == archive.read_bytes()
    assert load_omniglot("lake-background", root).num_classes == 4
    # present archives are kept; the URL prefix can come from the environment
    monkeypatch.setenv("METALAB_OMNIGLOT_URL", url)
    assert download_dataset("omniglot", root, checksums={"images_background.zip": md5}) == paths
    other = tmp_path / "other"
    download_dataset("omniglot", other, checksums={"images_background.zip": md5})
    assert (other / "omniglot" / "images_background.zip").is_file()


def test_download_dataset_offline_hint(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as error:
        download_dataset("omniglot", tmp_path, base_url=f"http://127.0.0.1:{_closed_port()}")
    assert str(tmp_path / "omniglot" / "images_background.zip") in str(error.value)


def test_download_dataset_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="miniimagenet/images"):
        download_dataset("miniimagenet", tmp_path)
    with pytest.raises(ValueError, match="the downloadable ones are 'omniglot', 'cifar100', 'cub'"):
        download_dataset("cifar", tmp_path)
    with pytest.raises(ValueError, match="tiered-ImageNet cannot be downloaded automatically"):
        download_dataset("tieredimagenet", tmp_path)


@pytest.mark.usefixtures("isolated_cache")
def test_describe_empty_root(tmp_path: Path) -> None:
    report = describe_data(tmp_path)
    assert str(tmp_path) in report
    assert "metalab data --download omniglot" in report
    assert str(tmp_path / "omniglot" / "images_background.zip") in report
    assert str(tmp_path / "miniimagenet" / "images") + "/<filename>.jpg" in report
    assert "train 4112" in report and "trainval 4800" in report
    assert "0/38400" in report


@pytest.mark.usefixtures("isolated_cache")
def test_describe_real_root(real_root: Path) -> None:
    before = describe_data(real_root)
    assert f"found: {real_root / 'omniglot' / 'images_background_small1.zip'} (zip" in before
    assert "no cache yet" in before
    load_omniglot("lake-background-small1", real_root)
    after = describe_data(real_root)
    small1 = next(line for line in after.splitlines() if "images_background_small1" in line)
    assert "cached at 28px" in small1


def test_an_interrupted_download_resumes_where_it_stopped(server: tuple[str, Path], tmp_path: Path,
                                                           drop_connections) -> None:
    base, served = server
    payload = bytes(range(256)) * 40  # 10240 bytes
    (served / "release.tgz").write_bytes(payload)
    destination = tmp_path / "data" / "release.tgz"
    drop_connections(4000)
    with pytest.raises(DataNotFoundError, match="4000 bytes kept in .*release.tgz.part: the next download resumes"):
        download(f"{base}/release.tgz", destination, hashlib.md5(payload).hexdigest())
    assert not destination.exists() and (tmp_path / "data" / "release.tgz.part").stat().st_size == 4000
    drop_connections(None)
    download(f"{base}/release.tgz", destination, hashlib.md5(payload).hexdigest())
    assert destination.read_bytes() == payload and not (tmp_path / "data" / "release.tgz.part").exists()


def test_a_kept_part_that_is_not_a_prefix_fails_its_checksum_and_is_removed(server: tuple[str, Path],
                                                                             tmp_path: Path) -> None:
    base, served = server
    payload = b"x" * 5000
    (served / "release.tgz").write_bytes(payload)
    destination = tmp_path / "release.tgz"
    (tmp_path / "release.tgz.part").write_bytes(b"y" * 100)  # bytes of another file
    with pytest.raises(ChecksumError, match="nothing was written"):
        download(f"{base}/release.tgz", destination, hashlib.md5(payload).hexdigest())
    assert not destination.exists() and not (tmp_path / "release.tgz.part").exists()
    download(f"{base}/release.tgz", destination, hashlib.md5(payload).hexdigest())  # the retry starts afresh
    assert destination.read_bytes() == payload


def test_a_part_longer_than_the_file_starts_again(server: tuple[str, Path], tmp_path: Path) -> None:
    base, served = server
    (served / "small.bin").write_bytes(b"abc")
    (tmp_path / "small.bin.part").write_bytes(b"0123456789")  # the server answers 416 to its range
    download(f"{base}/small.bin", tmp_path / "small.bin", hashlib.md5(b"abc").hexdigest())
    assert (tmp_path / "small.bin").read_bytes() == b"abc"
