"""Remove what mlc wrote under an outputs folder, and nothing else: ``python -m mlc.cli.clean OUTPUTS_DIR [--dry-run]``.

``make clean`` used to run ``rm -rf $(OUTPUTS)/*``: an empty ``OUTPUTS`` made that ``rm -rf /*``, the
``MLC_OUTPUTS`` variable the rest of mlc honours was ignored, and every file in the folder went, not only
mlc's. This module is what ``make clean`` runs instead. It refuses a folder that can only be a mistake
(``/``, the home directory, the repository or a folder above it, a file, a symlink) and any folder
without the ``.mlc-outputs`` file that mlc writes into every outputs folder it uses (so that a system
folder's ``cache/`` is never taken for mlc's), deletes only the top-level entries named in
``MLC_ENTRIES``, never follows a symlink, and says what it removed and kept.

Standard library only: it runs with the system ``python3`` before the virtualenv exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from mlc.stores import MARKER  # (standard library only, as this module)

# Every top-level entry that mlc writes into its outputs folder; nothing else there is ever deleted.
# Extend this tuple when mlc starts writing something new.
MLC_ENTRIES: tuple[str, ...] = (
    "runs",  # Hydra single-run directories
    "multirun",  # Hydra sweep directories
    "reproduce",  # mlc reproduce sweep directories
    "cache",  # generated / downloaded data sets (paths.cache)
    "mlartifacts",  # MLflow artifact root
    # The SQLite stores of MLflow and Optuna, SQLite's side files, and mlc's lock files beside them.
    "mlflow.db", "mlflow.db-wal", "mlflow.db-shm", "mlflow.db-journal", "mlflow.db.lock",
    "optuna.db", "optuna.db-wal", "optuna.db-shm", "optuna.db-journal", "optuna.db.lock",
)

GITKEEP = ".gitkeep"
REPO = Path(__file__).resolve().parents[2]  # the parent of the mlc/ package


class Refused(Exception):
    """The folder given is one that cleaning could only be a mistake for; the message says why."""


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path, so that ``//``, ``/.`` or ``a/..`` compare equal to what they name."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _forbidden() -> list[tuple[set[tuple[int, int]], str]]:
    """The folders never to clean, each as the identities it covers and the reason to give."""
    groups: list[tuple[list[Path], str]] = [
        ([Path("/")], "it is the filesystem root"),
        ([Path.home(), *Path.home().resolve().parents], "it is the home directory or a folder above it"),
        ([REPO, *REPO.parents], "it is the repository root or a folder above it"),
    ]
    return [({i for p in paths if (i := _identity(p)) is not None}, why) for paths, why in groups]


def check_target(raw: str) -> Path | None:
    """The resolved folder to clean, or None when it does not exist; raises Refused for a folder never to clean."""
    if not raw.strip():
        raise Refused(f"refusing to clean {raw!r}: the outputs folder is empty or blank")
    path = Path(raw).expanduser()
    if path.is_symlink():
        raise Refused(f"refusing to clean {raw!r}: it is a symlink (give the folder it points to)")
    if not path.exists():
        return None
    if not path.is_dir():
        raise Refused(f"refusing to clean {raw!r}: it exists but is not a directory")
    ident = _identity(path)
    for identities, why in _forbidden():
        if ident in identities:
            raise Refused(f"refusing to clean {raw!r}: {why}")
    if not (path / MARKER).is_file() and path.resolve() != REPO / "outputs":  # (the repository's own is mlc's)
        raise Refused(f"refusing to clean {raw!r}: it has no {MARKER} file, so mlc did not mark it as its outputs "
                      f"folder; if an older mlc wrote it, confirm with `touch {path / MARKER}`")
    return path.resolve()


def _label(entry: Path) -> str:
    """How an entry is shown: ``runs/`` for a folder, ``runs@`` for a symlink, ``mlflow.db`` for a file."""
    if entry.is_symlink():
        return entry.name + "@"
    return entry.name + "/" if entry.is_dir() else entry.name


def _remove(entry: Path) -> None:
    """Delete one entry without following links: a symlink is unlinked, a folder removed as a tree."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()
    else:
        shutil.rmtree(entry)  # rmtree never follows symlinks inside the tree


def clean(folder: Path, dry_run: bool = False) -> list[str]:
    """Remove mlc's entries from ``folder`` (or only report them with ``dry_run``); returns the lines to print."""
    names = set(MLC_ENTRIES)
    entries = sorted(folder.iterdir(), key=lambda e: e.name)
    ours = [e for e in entries if e.name in names]
    theirs = [e for e in entries if e.name not in names and e.name not in (GITKEEP, MARKER)]
    labels = ", ".join(_label(e) for e in ours)
    if not ours:
        lines = [f"nothing of mlc's in {folder}"]
    elif dry_run:
        lines = [f"would remove {labels} from {folder}"]
    else:
        for entry in ours:
            _remove(entry)
        lines = [f"removed {labels} from {folder}"]
    if theirs:
        count = f"{len(theirs)} entr{'y' if len(theirs) == 1 else 'ies'}"
        lines.append(f"kept {count} mlc did not write: {', '.join(_label(e) for e in theirs)}")
    if folder == REPO / "outputs" and not dry_run:
        (folder / GITKEEP).touch()  # the repository tracks its outputs/ folder through this file
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlc.cli.clean", description=__doc__.splitlines()[0])
    parser.add_argument("outputs", help="the outputs folder (make clean passes $(OUTPUTS))")
    parser.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    args = parser.parse_args(argv)
    try:
        folder = check_target(args.outputs)
    except Refused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if folder is None:
        print(f"nothing to clean: {args.outputs} does not exist")
        return 0
    try:
        lines = clean(folder, dry_run=args.dry_run)
    except OSError as exc:
        print(f"error: could not clean {folder}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
