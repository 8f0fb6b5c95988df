"""Decode-once image cache and per-item augmentation seeding (shared by every file-backed dataset)."""

from __future__ import annotations

import logging
import os
import pickle

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mlc.data import CsvImages, images
from mlc.data.images import decoded_images, seed_pipeline
from mlc.errors import DataError
from tests.test_data_fixtures import write_csv, write_image

N = 12


@pytest.fixture
def root(tmp_path):
    for split, n in (("train", N), ("val", 4), ("test", 4)):
        paths = [f"{split}/{i}.{'png' if i % 4 == 0 else 'jpg'}" for i in range(n)]
        for i, path in enumerate(paths):
            write_image(tmp_path / path, seed=i + 100 * n, size=(30 + i, 20))
        rows = [[p, i % 2, int(i % 3 == 0)] for i, p in enumerate(paths)]
        write_csv(tmp_path / f"{split}.csv", ["path", "a", "b"], rows)
    return tmp_path


def csv_source(root, **kwargs) -> CsvImages:
    return CsvImages(root=str(root), **({"image_size": 16, "decode_workers": 2} | kwargs))


def test_images_are_decoded_once_then_memory_mapped_from_the_cache(root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = csv_source(root, cache_dir=str(cache)).load("train")
    assert isinstance(first.pixels, np.memmap) and first.pixels.shape == (N, 16, 16, 3)
    monkeypatch.setattr(images, "decode_image", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = csv_source(root, cache_dir=str(cache)).load("train")
    assert np.array_equal(np.asarray(first.pixels), np.asarray(again.pixels))
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob("*.tmp*"))


def test_the_cache_key_follows_files_and_size(root):
    paths = sorted((root / "train").iterdir())
    key = images.cache_key(paths, 16)
    assert images.cache_key(paths, 32) != key and images.cache_key(paths[1:], 16) != key
    os.utime(paths[0], ns=(1, 1))  # a replaced image (new mtime) is decoded again
    assert images.cache_key(paths, 16) != key


def test_a_torn_cache_is_decoded_again(root, tmp_path, caplog):
    paths = sorted((root / "val").iterdir())
    pixels, _ = decoded_images(paths, 16, tmp_path)
    expected = np.array(pixels)
    (npy,) = tmp_path.glob("*.npy")
    npy.write_bytes(npy.read_bytes()[:500])
    with caplog.at_level(logging.WARNING):
        pixels, errors = decoded_images(paths, 16, tmp_path)
    assert "unreadable" in caplog.text and not errors and np.array_equal(np.asarray(pixels), expected)


def test_undecodable_files_are_remembered_by_the_cache(root, tmp_path, monkeypatch):
    (root / "test" / "1.jpg").write_bytes(b"garbage")
    paths = sorted((root / "test").iterdir())
    _, errors = decoded_images(paths, 16, tmp_path)
    assert list(errors) == [1] and "UnidentifiedImageError" in errors[1]
    monkeypatch.setattr(images, "decode_image", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert decoded_images(paths, 16, tmp_path)[1] == errors


def test_decoding_matches_pillow_resize_of_the_file(root):
    from PIL import Image

    path = root / "train" / "0.png"  # PNG: no JPEG draft scaling involved
    expected = np.asarray(Image.open(path).convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(images.decode_image(path, 16), expected)


def test_normalisation_of_items(root):
    ds = csv_source(root, cache_dir=None, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0)).load("val")
    raw = torch.from_numpy(np.array(ds.pixels[ds.rows[2]])).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor([0.5, 0.25, 0.0]).view(3, 1, 1)) / torch.tensor([0.5, 0.25, 1.0]).view(3, 1, 1)
    item = ds[2]
    assert item["index"] == 2 and item["target"].tolist() == [0.0, 0.0] and item["image"].dtype == torch.float32
    torch.testing.assert_close(item["image"], expected)


def pipeline() -> A.Compose:
    return A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Rotate(limit=20, p=0.7)])


def test_augmentation_depends_only_on_seed_epoch_and_index_also_across_workers(root, tmp_path):
    train = csv_source(root, cache_dir=str(tmp_path), train_transform=pipeline(), augment_seed=5).load("train")
    train.set_epoch(2)
    direct = torch.stack([train[i]["image"] for i in range(N)])
    loader = DataLoader(train, batch_size=3, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    seen = torch.zeros_like(direct)
    for batch in loader:
        seen[batch["index"]] = batch["image"]
    assert torch.equal(seen, direct)
    train.set_epoch(3)
    assert not torch.equal(torch.stack([train[i]["image"] for i in range(N)]), direct)
    other = csv_source(root, cache_dir=str(tmp_path), train_transform=pipeline(), augment_seed=6).load("train")
    other.set_epoch(2)
    assert not torch.equal(torch.stack([other[i]["image"] for i in range(N)]), direct)
    assert pickle.loads(pickle.dumps(train)).pixels.filename == train.pixels.filename  # workers reopen the map


def test_each_transform_draws_from_its_own_stream():
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], save_applied_params=True)
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    applied = []
    for index in range(64):
        seed_pipeline(flips, (0, 0, index))
        applied.append(tuple(t[0] for t in flips(image=image)["applied_transforms"]))
    assert {("HorizontalFlip",), ("VerticalFlip",)} <= set(applied)  # not always together (one shared seed would)


def test_a_pipeline_that_changes_the_size_is_a_clear_error(root):
    crop = A.Compose([A.CenterCrop(height=8, width=8)])
    ds = csv_source(root, cache_dir=None, train_transform=crop).load("train")
    with pytest.raises(DataError, match="turned a 16x16x3 image into 8x8x3"):
        ds[0]
    assert csv_source(root, cache_dir=None, train_transform=crop).load("val")[0]["image"].shape == (3, 16, 16)


def test_only_seedable_albumentations_pipelines_are_accepted(root):
    from mlc.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        csv_source(root, train_transform=lambda image: {"image": image})
    assert err.value.key == "train_transform" and "albumentations" in err.value.reason
