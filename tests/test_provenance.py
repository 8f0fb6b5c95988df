"""``mlc.provenance`` against a real git repository: the commit, the dirty flag, and None without git or a repo."""

from __future__ import annotations

import subprocess

import pytest

from mlc.provenance import git_commit, git_describe, machine


def git(repo, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false",
                           *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above tmp_path
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def test_git_commit_is_the_full_sha_and_the_dirty_flag_of_tracked_files(repo):
    sha = git(repo, "rev-parse", "HEAD")
    assert len(sha) == 40 and git_commit(repo) == (sha, False)
    assert sha.startswith(git_describe(repo)) and len(git_describe(repo)) >= 7  # no tags: the short sha
    (repo / "untracked.txt").write_text("new\n")
    assert git_commit(repo) == (sha, False)  # untracked files do not make the checkout dirty
    (repo / "a.txt").write_text("two\n")
    assert git_commit(repo) == (sha, True)
    assert git_describe(repo).endswith("-dirty")


def test_without_a_repository_or_git_there_is_no_commit(tmp_path, monkeypatch, repo):
    empty = tmp_path / "not-a-repo"
    empty.mkdir()
    assert git_commit(empty) is None and git_describe(empty) == "unknown"
    unborn = tmp_path / "unborn"
    unborn.mkdir()
    git(unborn, "init", "-q")  # a repository without a commit
    assert git_commit(unborn) is None and git_describe(unborn) == "unknown"
    assert git_commit(tmp_path / "missing") is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # git not installed
    assert git_commit(repo) is None and git_describe(repo) == "unknown"


def test_machine_is_one_non_empty_line():
    text = machine()
    assert text.strip() and "\n" not in text and " cores" in text and "Python " in text


def test_by_default_it_asks_about_the_checkout_mlc_runs_from():
    from mlc.provenance import REPO

    expected = git_commit(REPO) if (REPO / ".git").exists() else None  # installed into site-packages: None
    assert git_commit() == expected
