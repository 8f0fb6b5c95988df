"""``python -m mlc.cli.data``: per-split statistics of any dataset option as a table or as JSON."""

from __future__ import annotations

import json

import pytest

from mlc.cli.data import main
from tests.conftest import run_cli
from tests.test_data_fixtures import write_csv, write_image

CLASSES = ["cat", "dog"]
ROWS = {"train": [(1, 0)] * 5 + [(1, 1)] * 3 + [(0, 1)] * 2 + [(0, 0)] * 6, "val": [(1, 0), (0, 0), (0, 1), (0, 0)],
        "test": [(0, 1), (1, 1), (0, 0)]}


@pytest.fixture
def csv_root(tmp_path):
    for split, rows in ROWS.items():
        paths = [f"{split}/{i}.jpg" for i in range(len(rows))]
        for i, path in enumerate(paths):
            write_image(tmp_path / path, seed=i)
        write_csv(tmp_path / f"{split}.csv", ["path", *CLASSES], [[p, *r] for p, r in zip(paths, rows, strict=True)])
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_shows_sizes_negative_ratios_counts_and_groups(csv_root, capsys, tmp_path):
    code, out, _ = run(capsys, "dataset=csv", f"dataset.root={csv_root}", f"paths.cache={tmp_path / 'cache'}")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "dataset: csv  (2 classes)"
    assert lines[3].split() == ["train", "16", "6", "0.3750", "0", "0.812"]
    assert lines[5].split() == ["test", "3", "1", "0.3333", "0", "1.000"]
    assert [line.split() for line in lines[8:10]] == [["cat", "tail", "8", "1", "1"], ["dog", "tail", "5", "1", "2"]]
    assert lines[-1].endswith("head 0, medium 0, tail 2")


def test_json_reports_the_ratio_reached_by_the_controls(csv_root, capsys, tmp_path):
    code, out, _ = run(capsys, "--json", "dataset=csv", f"dataset.root={csv_root}", "dataset.negative_ratio=0.5",
                       "dataset.negative_ratio_scope=train", f"paths.cache={tmp_path / 'cache'}")
    assert code == 0
    report = json.loads(out)
    train, val = report["splits"]["train"], report["splits"]["val"]
    # 6 negatives, 10 positives: the largest n with round(0.5 n) <= 6 and n - round(0.5 n) <= 10 is 13
    assert train["num_samples"] == 13 and train["negative_count"] == round(0.5 * 13) == 6
    assert val["num_samples"] == 4 and val["negative_count"] == 2  # train-only scope: val as it is
    assert report["class_names"] == CLASSES and report["class_groups"] == ["tail", "tail"]
    assert report["group_sizes"] == {"head": 0, "medium": 0, "tail": 2}


def test_decode_finds_a_corrupt_image_and_errors_are_one_line(csv_root, capsys, tmp_path):
    (csv_root / "val" / "2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cache = f"paths.cache={tmp_path / 'cache'}"
    assert run(capsys, "dataset=csv", f"dataset.root={csv_root}", cache)[0] == 0  # annotations only
    code, _, err = run(capsys, "--decode", "dataset=csv", f"dataset.root={csv_root}", cache)
    assert code == 1 and err.startswith("error: ") and "val.csv:4: cannot decode" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "dataset=csv", cache)
    assert code == 2 and err.startswith("error: dataset.root=None: is required")
    code, out, _ = run(capsys, "--json", "--decode", "dataset=csv", f"dataset.root={csv_root}",
                       "dataset.skip_bad_images=true", cache)
    val = json.loads(out)["splits"]["val"]
    assert code == 0 and val["skipped"] == 1 and val["num_samples"] == 3


@pytest.mark.slow
def test_runs_as_a_module(csv_root, outputs, data_cache):
    result = run_cli(["--json", "dataset=csv", f"dataset.root={csv_root}"], outputs, data_cache, module="mlc.cli.data")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["splits"]["test"]["num_samples"] == 3
