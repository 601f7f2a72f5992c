"""Checked torch.save files: the digest rides in the zip comment, damage anywhere is refused, old files load."""
from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
import torch

from metalab.utils.checksum import IntegrityError, stored_checksum, torch_load_checked, torch_save_checked


def payload() -> dict:
    return {"weight": torch.arange(4096, dtype=torch.float32), "step": 7, "names": ["a", "b"]}


def test_a_checked_file_is_an_ordinary_torch_file_whose_comment_is_the_sha256_of_torch_saves_bytes(tmp_path):
    torch_save_checked(payload(), tmp_path / "x.pt")
    plain = io.BytesIO()
    torch.save(payload(), plain)
    comment = zipfile.ZipFile(tmp_path / "x.pt").comment
    assert comment == b"metalab-sha256:" + hashlib.sha256(plain.getvalue()).hexdigest().encode()
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["weight"], payload()["weight"])
    assert torch_load_checked(tmp_path / "x.pt", weights_only=True, require_checksum=True)["step"] == 7


@pytest.mark.parametrize("where", ["tensor", "pickle", "comment"])
def test_damage_anywhere_is_refused(tmp_path, where):
    path = tmp_path / "x.pt"
    torch_save_checked(payload(), path)
    data = bytearray(path.read_bytes())
    start = {"tensor": data.find(payload()["weight"].numpy().tobytes()) + 100, "pickle": data.find(b"names"),
             "comment": len(data) - 10}[where]
    data[start:start + 4] = bytes(b ^ 0x5A for b in data[start:start + 4])
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"x.pt is damaged: its content no longer matches the SHA-256"):
        torch_load_checked(path, weights_only=True)


def test_a_file_without_checksum_loads_unless_one_is_required(tmp_path):
    torch.save(payload(), tmp_path / "old.pt")
    assert stored_checksum((tmp_path / "old.pt").read_bytes()) is None
    assert torch_load_checked(tmp_path / "old.pt", weights_only=True)["step"] == 7
    with pytest.raises(IntegrityError, match="carries no checksum"):
        torch_load_checked(tmp_path / "old.pt", weights_only=True, require_checksum=True)
