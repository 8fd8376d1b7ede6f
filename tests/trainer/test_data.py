"""Photo folders, crops and the resumable sample order."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.trainer.conftest import make_photos
from trainer.data import DataError, PhotoCrops, ResumableSampler, find_photos, load_style_image
from trainer.tasks import degrade, jpeg_roundtrip


def test_corrupt_photos_are_skipped_and_counted(tmp_path):
    folder = make_photos(tmp_path / "p", 3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not a photo")
    nested = make_photos(folder / "holiday", 1, seed=1)
    photos, skipped = find_photos(folder, minimum=2)
    assert len(photos) == 4 and skipped == 1
    assert any(p.parent == nested for p in photos)


def test_empty_or_missing_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable photos in .*--dataset"):
        find_photos(tmp_path / "empty", minimum=1)
    with pytest.raises(DataError, match="dataset folder not found"):
        find_photos(tmp_path / "nowhere", minimum=1)


def test_too_few_photos_for_one_batch_is_a_clear_error(tmp_path):
    folder = make_photos(tmp_path / "p", 3)
    with pytest.raises(DataError, match="only 3 readable photos.*at least 4.*--batch-size"):
        find_photos(folder, minimum=4)


def test_style_image_is_resized_and_checked(tmp_path, painting):
    style = load_style_image(painting, 32)
    assert style.shape == (1, 3, 24, 32) and 0 <= style.min() and style.max() <= 1
    with pytest.raises(DataError, match="style image not found"):
        load_style_image(tmp_path / "missing.jpg", 32)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read the style image"):
        load_style_image(tmp_path / "bad.png", 32)


def test_crops_are_square_and_reproducible(photos):
    dataset = PhotoCrops(find_photos(photos, 1)[0], 32, resize=True)
    a, b = dataset[(3, "0-0-7")], dataset[(3, "0-0-7")]
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    big = PhotoCrops(find_photos(photos, 1)[0], 80, resize=False)  # smaller photos are enlarged
    assert big[(0, "x")].shape == (3, 80, 80)


def test_sampler_started_at_a_step_continues_the_same_order():
    whole = list(itertools.islice(ResumableSampler(10, 3, seed=5), 3 * 7))
    resumed = list(itertools.islice(ResumableSampler(10, 3, seed=5, start_step=4), 3 * 3))
    assert resumed == whole[3 * 4 :]
    # Epochs of 3 steps: each epoch's items are distinct photos, and epochs differ in order.
    first, second = whole[:9], whole[9:18]
    assert len({i for i, _ in first}) == 9
    assert [i for i, _ in first] != [i for i, _ in second]


def test_ranks_share_out_the_single_process_batches():
    single = list(itertools.islice(ResumableSampler(12, 4, seed=1), 4 * 6))
    ranks = [list(itertools.islice(ResumableSampler(12, 2, 1, 0, r, 2), 2 * 6)) for r in (0, 1)]
    for step in range(6):
        merged = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert merged == single[4 * step : 4 * step + 4]


def test_resident_photos_give_the_same_crops_as_decoding_each_time(tmp_path):
    photos, _ = find_photos(make_photos(tmp_path / "p", 4, size=(70, 50)), 1)
    items = [(i % 4, f"0-0-{i}") for i in range(12)]  # each photo several times, flips included
    for resize in (True, False):
        decoded = PhotoCrops(photos, 40, resize)
        kept = PhotoCrops(photos, 40, resize, resident=torch.device("cpu"))
        for item in items:
            assert torch.equal(decoded[item], kept[item]), (resize, item)
        assert len(kept._kept) == 4  # each photo decoded once


def test_photo_degradations_are_mild_random_and_repeat_under_a_seed():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    hr = (0.5 + 0.4 * torch.sin(x / 5) * torch.cos(y / 7)).expand(4, 3, 64, 64).contiguous()
    clean = degrade(hr, 4, "matlab")
    torch.manual_seed(0)
    first = degrade(hr, 4, "photo")
    torch.manual_seed(0)
    again = degrade(hr, 4, "photo")
    assert first.shape == clean.shape and torch.equal(first, again)  # resumable: torch's RNG
    assert 0 <= first.min() and first.max() <= 1
    # Each image got its own blur, noise and JPEG: close to the clean input, not equal to it.
    errors = (first - clean).abs().mean(dim=(1, 2, 3))
    assert (errors > 0.002).all() and (errors < 0.08).all() and errors.std() > 0


def test_jpeg_quality_sets_how_much_is_lost():
    image = torch.rand(3, 32, 32)
    lost = [(jpeg_roundtrip(image, q) - image).abs().mean() for q in (30, 60, 95)]
    assert lost[0] > lost[1] > lost[2] > 0
