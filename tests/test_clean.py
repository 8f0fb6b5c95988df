"""`make clean` (mlc.cli.clean): removes only what mlc wrote, and refuses folders that can only be a mistake.

Refusal cases run with CLEAN_FLAGS=--dry-run, so that even a broken safety check would delete nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlc.cli.clean import MARKER, MLC_ENTRIES, main
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

MLC_DIRS = ["runs", "multirun", "reproduce", "cache", "mlartifacts"]
MLC_FILES = ["mlflow.db", "mlflow.db-wal", "optuna.db", "optuna.db.lock"]
FOREIGN = {"notes.txt": "keep me\n", "data/x.csv": "a,b\n1,2\n"}


def make_env(**extra: str) -> dict[str, str]:
    """The environment without anything an outer make or the caller's shell could leak into the sub-make."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "OUTPUTS", "MLC_OUTPUTS", "CLEAN_FLAGS"}
    return {k: v for k, v in os.environ.items() if k not in drop} | extra


def make_clean(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "clean", *args], cwd=ROOT, env=env or make_env(), capture_output=True, text=True,
                          timeout=60)


def populate(folder: Path, marked: bool = True) -> Path:
    """An outputs folder holding mlc's usual entries next to files mlc did not write (and mlc's marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    if marked:
        (folder / MARKER).write_text("mlc\n")
    for name in MLC_DIRS:
        (folder / name / "sub").mkdir(parents=True)
        (folder / name / "sub" / "f.txt").write_text(name)
    for name in MLC_FILES:
        (folder / name).write_text(name)
    for rel, text in FOREIGN.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def assert_only_mlc_removed(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "data", "notes.txt"]  # the folder stays mlc's
    for rel, text in FOREIGN.items():
        assert (folder / rel).read_text() == text


def assert_untouched(folder: Path) -> None:
    for name in MLC_DIRS:
        assert (folder / name / "sub" / "f.txt").read_text() == name
    for name in MLC_FILES:
        assert (folder / name).read_text() == name
    for rel, text in FOREIGN.items():
        assert (folder / rel).read_text() == text


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """stderr without make's own `make: *** [...] Error 2` line."""
    return [line for line in proc.stderr.splitlines() if not line.startswith("make")]


def test_entries_constant_covers_what_the_tests_write() -> None:
    assert set(MLC_DIRS + MLC_FILES) <= set(MLC_ENTRIES)
    assert not set(FOREIGN) & set(MLC_ENTRIES)


def test_make_clean_removes_only_mlc_entries(tmp_path: Path) -> None:
    out = populate(tmp_path / "outputs")
    proc = make_clean(f"OUTPUTS={out}")
    assert proc.returncode == 0, proc.stderr
    assert_only_mlc_removed(out)
    assert f"removed cache/, mlartifacts/, mlflow.db, mlflow.db-wal, multirun/, optuna.db, optuna.db.lock, " \
           f"reproduce/, runs/ from {out.resolve()}" in proc.stdout
    assert "kept 2 entries mlc did not write: data/, notes.txt" in proc.stdout


def test_make_clean_honours_mlc_outputs(tmp_path: Path) -> None:
    out = populate(tmp_path / "elsewhere")
    proc = make_clean(env=make_env(MLC_OUTPUTS=str(out)))
    assert proc.returncode == 0, proc.stderr
    assert_only_mlc_removed(out)


def test_command_line_outputs_wins_over_mlc_outputs(tmp_path: Path) -> None:
    chosen, other = populate(tmp_path / "chosen"), populate(tmp_path / "other")
    proc = make_clean(f"OUTPUTS={chosen}", env=make_env(MLC_OUTPUTS=str(other)))
    assert proc.returncode == 0, proc.stderr
    assert_only_mlc_removed(chosen)
    assert_untouched(other)


def test_missing_folder_is_not_an_error(tmp_path: Path) -> None:
    proc = make_clean(f"OUTPUTS={tmp_path / 'absent'}")
    assert proc.returncode == 0, proc.stderr
    assert f"nothing to clean: {tmp_path / 'absent'} does not exist" in proc.stdout


def test_folder_without_mlc_entries(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text("mlc\n")
    (tmp_path / "notes.txt").write_text("x")
    proc = make_clean(f"OUTPUTS={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert f"nothing of mlc's in {tmp_path.resolve()}" in proc.stdout
    assert "kept 1 entry mlc did not write: notes.txt" in proc.stdout
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_symlinked_entry_is_unlinked_not_followed(tmp_path: Path) -> None:
    out, target = tmp_path / "outputs", tmp_path / "precious"
    out.mkdir()
    (out / MARKER).write_text("mlc\n")
    (target / "deep").mkdir(parents=True)
    (target / "deep" / "data.bin").write_text("precious")
    (out / "runs").symlink_to(target, target_is_directory=True)
    proc = make_clean(f"OUTPUTS={out}")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "runs").exists() and not (out / "runs").is_symlink()
    assert (target / "deep" / "data.bin").read_text() == "precious"


def test_dry_run_lists_but_removes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = populate(tmp_path / "outputs")
    assert main([str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("would remove cache/, mlartifacts/, mlflow.db, ")
    assert "runs/ from " in printed and "kept 2 entries" in printed
    assert_untouched(out)


def _refusal_cases(tmp_path: Path) -> dict[str, tuple[str, dict[str, str], Path | None]]:
    """name -> (OUTPUTS value, extra environment, a folder whose contents must survive)."""
    home = populate(tmp_path / "home")
    victim = populate(tmp_path / "victim")
    (tmp_path / "link").symlink_to(victim, target_is_directory=True)
    (tmp_path / "file").write_text("a file")
    return {
        "empty": ("", {}, None),
        "blank": (" ", {}, None),
        "root": ("/", {}, None),
        "double-slash root": ("//", {}, None),
        "root-dot": ("/.", {}, None),
        "repo root": (str(ROOT), {}, None),
        "home": (str(home), {"HOME": str(home)}, home),
        "regular file": (str(tmp_path / "file"), {}, None),
        "symlink to a directory": (str(tmp_path / "link"), {}, victim),
    }


@pytest.mark.parametrize("case", ["empty", "blank", "root", "double-slash root", "root-dot", "repo root", "home",
                                  "regular file", "symlink to a directory"])
def test_make_clean_refuses(case: str, tmp_path: Path) -> None:
    value, extra, survivor = _refusal_cases(tmp_path)[case]
    proc = make_clean(f"OUTPUTS={value}", "CLEAN_FLAGS=--dry-run", env=make_env(**extra))
    assert proc.returncode != 0
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "would remove" not in proc.stdout and "removed" not in proc.stdout
    if case == "symlink to a directory":
        assert "symlink" in lines[0]
    if survivor is not None:
        assert_untouched(survivor)
    assert (tmp_path / "file").read_text() == "a file"
    assert (ROOT / "Makefile").is_file()


@pytest.mark.parametrize("value", ["", "   ", "/", "//", "/."])
def test_main_refuses_with_exit_code_2(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([value, "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and repr(value) in err[0]


def test_a_folder_mlc_did_not_mark_is_refused_and_untouched(tmp_path: Path) -> None:
    """A system folder's cache/ and runs/ are not mlc's: without the marker nothing goes, even without --dry-run."""
    folder = populate(tmp_path / "var", marked=False)
    proc = make_clean(f"OUTPUTS={folder}")
    assert proc.returncode != 0
    (line,) = error_lines(proc)
    assert line.startswith(f"error: refusing to clean '{folder}': it has no {MARKER} file"), line
    assert f"touch {folder / MARKER}" in line
    assert_untouched(folder)
    assert not (folder / MARKER).exists()
    (folder / MARKER).touch()  # what the message says confirms an older mlc's outputs folder
    assert make_clean(f"OUTPUTS={folder}").returncode == 0
    assert_only_mlc_removed(folder)
