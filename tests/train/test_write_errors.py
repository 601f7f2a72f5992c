"""A full disk or a read-only run directory stops train, resume and eval --save-manifest with one line naming
the file and the cause (exit code 1), and loses nothing: the previous last.pt stays, no temporary file is left.

Simulated by making ``os.write`` fail on one file; then for real, where this process may mount file systems
(root): a read-only bind mount of the run directory and a full tmpfs, inside a private mount namespace."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from metalab.cli import main
from metalab.train.checkpoint import load_checkpoint
from metalab.train.trainer import Trainer
from metalab.utils import io as metalab_io
from test_trainer import folder_config


def fail_writes_to(monkeypatch, name: str, code: int = errno.ENOSPC) -> None:
    """``os.write`` raises OSError(code) for the temporary files of ``name`` (how atomic writes write), else works."""
    real_write = os.write

    def write(handle, data):
        if f"/.{name}." in os.readlink(f"/proc/self/fd/{handle}"):
            raise OSError(code, os.strerror(code))
        return real_write(handle, data)

    monkeypatch.setattr(metalab_io.os, "write", write)


@pytest.fixture
def run(image_folders, tmp_path, one_thread):
    Trainer(folder_config(image_folders, tmp_path / "run", steps=2)).fit()
    return tmp_path / "run"


def test_a_full_disk_during_resume_keeps_last_pt_and_says_how_to_go_on(run, monkeypatch, capsys):
    before = (run / "last.pt").read_bytes()
    fail_writes_to(monkeypatch, "last.pt")
    assert main(["train", str(run), "--resume", "train.steps=4", "train.progress=false"]) == 1
    error = capsys.readouterr().err.splitlines(keepends=True)[-1]  # after the notices of the start
    assert error == (f"metalab: error: cannot write {run / 'last.pt'}: no space left on the device (ENOSPC); training "
                     f"stopped after step 4 and the last good checkpoint in {run} was kept. Free space there (or train "
                     f"in another run.dir), then resume with --resume.\n")
    assert (run / "last.pt").read_bytes() == before
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    assert main(["train", str(run), "--resume", "train.steps=4", "train.progress=false"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 4


def test_a_full_disk_before_the_first_checkpoint(image_folders, tmp_path, monkeypatch, one_thread):
    fail_writes_to(monkeypatch, "best.pt")
    with pytest.raises(metalab_io.WriteError,
                       match=r"best.pt: no space left on the device \(ENOSPC\); training stopped "
                                                    r"after step 2 and no checkpoint had been written yet.*start the "
                                                    r"run again"):
        Trainer(folder_config(image_folders, tmp_path / "run", steps=4)).fit()
    assert not list((tmp_path / "run").glob(".*.tmp")) and not (tmp_path / "run" / "train.lock").exists()


def test_eval_save_manifest_on_a_full_disk(run, tmp_path, monkeypatch, capsys):
    fail_writes_to(monkeypatch, "episodes.json", errno.EACCES)
    assert main(["eval", str(run), "--episodes", "3", "--save-manifest", str(tmp_path / "episodes.json")]) == 1
    assert capsys.readouterr().err.splitlines(keepends=True)[-1] == (
        f"metalab: error: cannot write {tmp_path / 'episodes.json'}: permission denied (EACCES); nothing was scored: "
        f"give --save-manifest a path where files can be written\n")
    assert not list(tmp_path.glob(".episodes.json.*"))


def _mount_namespace_or_skip() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("real read-only and full file systems need root and unshare/mount (a private mount namespace)")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt && mount -o remount,ro /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount in a private mount namespace here: {probe.stderr.strip()}")


def in_mount_namespace(script: str) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (its mounts vanish with it); `metalab` is this Python's."""
    prelude = f"metalab() {{ {sys.executable} -m metalab \"$@\"; }}\nset -u\n"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", prelude + script],
                          capture_output=True, text=True)


def test_a_read_only_run_directory_for_real(run, tmp_path):
    _mount_namespace_or_skip()
    done = in_mount_namespace(textwrap.dedent(f"""
        mount --bind {run} {run} && mount -o remount,bind,ro {run}
        metalab train {run} --resume train.steps=4 train.progress=false; echo "train rc $?"
        metalab eval {run} --episodes 3 --save-manifest {run}/episodes.json; echo "eval rc $?"
    """))
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("metalab: error:")]
    assert done.stdout.splitlines() == ["train rc 1", "eval rc 1"], done.stderr
    assert lines[0].startswith(f"metalab: error: cannot write {run / 'train.lock'}: read-only file system (EROFS); "
                               f"training did not start and the last good checkpoint in {run} was kept. Make that "
                               f"place writable")
    assert lines[1] == (f"metalab: error: cannot write {run / 'episodes.json'}: read-only file system (EROFS); nothing "
                        f"was scored: give --save-manifest a path where files can be written")
    assert len(lines) == 2 and load_checkpoint(run / "last.pt")["step"] == 2


def test_a_full_disk_for_real(run, tmp_path):
    _mount_namespace_or_skip()
    disk = tmp_path / "disk"
    disk.mkdir()
    done = in_mount_namespace(textwrap.dedent(f"""
        mount -t tmpfs -o size=4m tmpfs {disk} && cp -a {run} {disk}/run
        # leave 32 kB: the lock, config and log fit, a checkpoint does not
        free=$(df --output=avail -B1 {disk} | tail -1)
        head -c $((free - 32768)) /dev/zero > {disk}/filler
        metalab train {disk}/run --resume train.steps=4 train.progress=false; echo "train rc $?"
        cmp {run}/last.pt {disk}/run/last.pt && echo "last.pt intact"
        ls -A {disk}/run
    """))
    out = done.stdout.splitlines()
    assert out[:2] == ["train rc 1", "last.pt intact"], done.stdout + done.stderr
    assert not [name for name in out[2:] if name.endswith(".tmp")]
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"metalab: error: cannot write {disk}/run/") and "no space left on the device (ENOSPC)" in done.stderr
