"""Tests of metalearn.datasets on small generated archives in the official layouts.

The real archives in ``../shared/data`` (or ``$METALEARN_DATA``) are used when present:
the real Omniglot is prepared in full (about 6 s); the real MiniImageNet (about 8 s
and 160 MB) only when ``METALEARN_REAL_DATA=1``, otherwise that test is skipped.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metalearn import datasets, paths
from metalearn.datasets import DataError, EpisodeSampler

REAL = Path(os.environ.get("METALEARN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

# ---------------------------------------------------------------- fixture helpers

#: small Omniglot: archive -> {alphabet: characters}; 8 characters in all
SMALL_OMNIGLOT = {
    "images_background": {"Alpha": 3, "Beta": 2},
    "images_evaluation": {"Gamma": 2, "Delta": 1},
}
SMALL_COUNTS = {root: (len(alphabets), sum(alphabets.values()))
                for root, alphabets in SMALL_OMNIGLOT.items()}
SMALL_MINI = {"train": 3, "val": 2, "test": 2}


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def omniglot_drawing(rows: int, size: int = 105) -> Image.Image:
    """One-bit drawing: white (1) background, the top ``rows`` rows black (0) ink."""
    image = Image.new("1", (size, size), 1)
    image.paste(0, (0, 0, size, rows))
    return image


def make_omniglot(folder: Path, layout=SMALL_OMNIGLOT, drawings: int = 20, size: int = 105,
                  odd: dict | None = None) -> Path:
    """Write ``images_background.zip``/``images_evaluation.zip`` in the official layout.

    Character number ``g`` (counted over both archives, in sorted order) has ink in
    its top ``10 * (g + 1)`` rows, so the prepared order and inversion can be checked.
    ``odd`` changes one character: {"character": g, "drawings": n} or {"character": g,
    "size": s} (all its drawings s x s).
    """
    odd = odd or {}
    folder.mkdir(parents=True, exist_ok=True)
    g = 0
    for root, alphabets in layout.items():
        with zipfile.ZipFile(folder / f"{root}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for alphabet in sorted(alphabets):
                for c in range(1, alphabets[alphabet] + 1):
                    n = odd.get("drawings", drawings) if odd.get("character") == g else drawings
                    s = odd.get("size", size) if odd.get("character") == g else size
                    data = png_bytes(omniglot_drawing(10 * (g + 1), s))
                    for d in range(1, n + 1):
                        archive.writestr(f"{root}/{alphabet}/character{c:02d}/{g:04d}_{d:02d}.png",
                                         data)
                    g += 1
    return folder


def make_miniimagenet(folder: Path, classes=SMALL_MINI, per_class: int | dict = 4, size: int = 84,
                      missing: str | None = None, odd_image: Image.Image | None = None) -> Path:
    """Write ``images.zip`` + ``train/val/test.csv`` in the original layout.

    Class number ``g`` (over all splits) has solid images of gray level ``20 * (g + 1)``;
    ``per_class`` images each (or {split: images per class}). ``missing`` is left out of the
    zip although listed; ``odd_image`` replaces the first image.
    """
    folder.mkdir(parents=True, exist_ok=True)
    g = 0
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        for split, n_classes in classes.items():
            lines = ["filename,label"]
            for _ in range(n_classes):
                wnid = f"n{g:08d}"
                data = png_bytes(Image.new("RGB", (size, size), (20 * (g + 1),) * 3), "JPEG")
                for i in range(per_class[split] if isinstance(per_class, dict) else per_class):
                    name = f"{wnid}{i:08d}.jpg"
                    lines.append(f"{name},{wnid}")
                    if name == missing:
                        continue
                    if odd_image is not None and g == 0 and i == 0:
                        archive.writestr(f"images/{name}", png_bytes(odd_image, "JPEG"))
                    else:
                        archive.writestr(f"images/{name}", data)
                g += 1
            (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


def prepare_small_omniglot(src: Path, out: Path, **kwargs):
    return datasets.prepare_omniglot(src, out, counts=SMALL_COUNTS, **kwargs)


def prepare_small_mini(src: Path, out: Path, **kwargs):
    return datasets.prepare_miniimagenet(src, out, classes=SMALL_MINI, **kwargs)


# ---------------------------------------------------------------- omniglot preparation


def test_prepare_omniglot_small(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    out = tmp_path / "out" / "omniglot.npz"
    summary = prepare_small_omniglot(src, out)
    assert summary["characters"] == 8 and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["omniglot.npz"]  # no temp file left
    data = datasets.load(out)
    images = data["images"]
    assert images.shape == (8, 20, 28, 28) and images.dtype == np.uint8
    assert list(data["archives"]) == ["background"] * 5 + ["evaluation"] * 3
    assert list(data["alphabets"]) == ["Alpha"] * 3 + ["Beta"] * 2 + ["Delta", "Gamma", "Gamma"]
    assert list(data["characters"][:3]) == ["character01", "character02", "character03"]
    # ink ~ 255 at the top, background = 0 at the bottom (LANCZOS rings a little near
    # an edge); more ink for later characters
    assert (images[:, :, 0, :] >= 240).all() and (images[:, :, -1, :] == 0).all()
    ink = images.astype(float).mean(axis=(1, 2, 3)) / 255
    assert np.all(np.diff(ink) > 0)
    # the evaluation archive was written in the order Delta then Gamma (sorted), so the
    # 6th character (g=5) is Delta's: 60 of 105 rows of ink
    assert abs(ink[5] - 60 / 105) < 0.03
    assert str(data["resample"]) == "lanczos"


def test_prepare_omniglot_resample_options(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    lanczos = datasets.load(prepare_small_omniglot(src, tmp_path / "l.npz")["path"])["images"]
    nearest = datasets.load(prepare_small_omniglot(src, tmp_path / "n.npz", resample="nearest")["path"])["images"]
    assert set(np.unique(nearest)) <= {0, 255}  # binary, as MAML's resized files
    assert len(np.unique(lanczos)) > 2  # anti-aliased edge
    with pytest.raises(ValueError, match="resample"):
        prepare_small_omniglot(src, tmp_path / "x.npz", resample="cubic")


def test_prepare_omniglot_other_size(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    data = datasets.load(prepare_small_omniglot(src, tmp_path / "o.npz", size=14)["path"])
    assert data["images"].shape == (8, 20, 14, 14)


def assert_fails(prepare, src, out, *patterns):
    """``prepare`` raises DataError mentioning every pattern; nothing is left in out's folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError) as info:
        prepare(src, out)
    for pattern in patterns:
        assert pattern in str(info.value), str(info.value)
    assert list(out.parent.iterdir()) == []
    return str(info.value)


def test_omniglot_missing_zip(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    (src / "images_evaluation.zip").unlink()
    assert_fails(prepare_small_omniglot, src, tmp_path / "out" / "o.npz",
                 "images_evaluation.zip", str(src))


def test_omniglot_truncated_zip(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    path = src / "images_background.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_fails(prepare_small_omniglot, src, tmp_path / "out" / "o.npz", str(path), "truncated")


def test_omniglot_corrupt_member(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    path = src / "images_background.zip"
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[7]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start, start + info.compress_size):
        raw[i] ^= 0x5A  # garble the compressed bytes, keep the directory intact
    path.write_bytes(bytes(raw))
    assert_fails(prepare_small_omniglot, src, tmp_path / "out" / "o.npz", info.filename)


def test_omniglot_wrong_image_size(tmp_path):
    src = make_omniglot(tmp_path / "raw", odd={"character": 6, "size": 104})
    assert_fails(prepare_small_omniglot, src, tmp_path / "out" / "o.npz",
                 "104x104", "expected 105x105", "images_evaluation.zip")


def test_omniglot_wrong_drawings_count(tmp_path):
    src = make_omniglot(tmp_path / "raw", odd={"character": 1, "drawings": 19})
    assert_fails(prepare_small_omniglot, src, tmp_path / "out" / "o.npz",
                 "20 drawings", "Alpha/character02", "19")


def test_omniglot_wrong_counts_and_layout(tmp_path):
    src = make_omniglot(tmp_path / "raw")
    # the real expected counts against the small archives
    assert_fails(datasets.prepare_omniglot, src, tmp_path / "out" / "o.npz",
                 "expected 30 alphabets, 964 characters", "found 2 alphabets, 5 characters")
    with zipfile.ZipFile(src / "images_evaluation.zip", "a") as archive:
        archive.writestr("images_evaluation/Gamma/readme.txt", "stray")
    assert_fails(prepare_small_omniglot, src, tmp_path / "out" / "o.npz", "readme.txt")


def test_failed_write_leaves_nothing_and_keeps_old_output(tmp_path, monkeypatch):
    src = make_omniglot(tmp_path / "raw")
    out = tmp_path / "out" / "o.npz"
    out.parent.mkdir()
    out.write_bytes(b"previous")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_small_omniglot(src, out)
    assert [p.name for p in out.parent.iterdir()] == ["o.npz"]
    assert out.read_bytes() == b"previous"


# ---------------------------------------------------------------- miniimagenet preparation


def test_prepare_miniimagenet_small(tmp_path):
    src = make_miniimagenet(tmp_path / "raw")
    out = tmp_path / "out" / "mini.npz"
    summary = prepare_small_mini(src, out)
    assert summary["per_class"] == {"train": 4, "val": 4, "test": 4} and summary["classes"] == SMALL_MINI
    data = datasets.load(out)
    assert data["train_images"].shape == (3, 4, 84, 84, 3) and data["train_images"].dtype == np.uint8
    assert data["val_images"].shape == (2, 4, 84, 84, 3)
    assert data["test_images"].shape == (2, 4, 84, 84, 3)
    assert list(data["val_classes"]) == ["n00000003", "n00000004"]
    assert data["test_files"][1, 2] == "n0000000600000002.jpg"
    levels = [data[f"{s}_images"].mean(axis=(1, 2, 3, 4)) for s in SMALL_MINI]
    assert np.allclose(np.concatenate(levels), 20 * np.arange(1, 8), atol=2)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mini.npz"]
    prepare_small_mini(src, tmp_path / "again.npz", per_class=4)  # explicit count accepted


def test_miniimagenet_csv_names_missing_file(tmp_path):
    src = make_miniimagenet(tmp_path / "raw", missing="n0000000400000001.jpg")
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz",
                 "n0000000400000001.jpg", "missing", str(src / "images.zip"), str(src / "val.csv"))


def test_miniimagenet_missing_csv_and_zip(tmp_path):
    src = make_miniimagenet(tmp_path / "raw")
    (src / "val.csv").unlink()
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", str(src / "val.csv"))
    src = make_miniimagenet(tmp_path / "raw2")
    (src / "images.zip").unlink()
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", str(src / "images.zip"))


def test_miniimagenet_truncated_zip(tmp_path):
    src = make_miniimagenet(tmp_path / "raw")
    path = src / "images.zip"
    path.write_bytes(path.read_bytes()[:-100])
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", str(path))


def test_miniimagenet_wrong_image(tmp_path):
    src = make_miniimagenet(tmp_path / "raw", odd_image=Image.new("RGB", (84, 83)))
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", "84x83", "expected 84x84 RGB")
    src = make_miniimagenet(tmp_path / "gray", odd_image=Image.new("L", (84, 84)))
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", "84x84 L")


def test_miniimagenet_wrong_counts(tmp_path):
    src = make_miniimagenet(tmp_path / "raw")
    assert_fails(datasets.prepare_miniimagenet, src, tmp_path / "out" / "m.npz",
                 "'train': 64", "'train': 3")
    assert_fails(lambda s, o: prepare_small_mini(s, o, per_class=600), src,
                 tmp_path / "out" / "m.npz", "expected 600 images")
    lines = (src / "test.csv").read_text().splitlines()
    (src / "test.csv").write_text("\n".join(lines[:-1]) + "\n")  # one class loses an image
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", str(src / "test.csv"), "same number",
                 "(4, as most of its classes), but n00000006 has 3")


def test_miniimagenet_splits_may_hold_different_numbers_of_images_per_class(tmp_path):
    """The copy with every training image: 600 per training class, 100 per validation and test
    class (here 6 and 2): each split is checked within itself and against what is required."""
    src = make_miniimagenet(tmp_path / "raw", per_class={"train": 6, "val": 2, "test": 2})
    out = tmp_path / "out" / "full.npz"
    summary = prepare_small_mini(src, out, per_class={"train": 6})
    assert summary["per_class"] == {"train": 6, "val": 2, "test": 2}
    data = datasets.load(out)
    assert [data[f"{s}_images"].shape[:2] for s in SMALL_MINI] == [(3, 6), (2, 2), (2, 2)]
    assert data["train_files"][2, 5] == "n0000000200000005.jpg"
    assert (data["train_images"][1] == 40).all() and (data["test_images"][0] == 120).all()  # class g: level 20 (g + 1)
    assert_fails(lambda s, o: prepare_small_mini(s, o, per_class={"train": 600}), src, tmp_path / "bad" / "m.npz",
                 str(src / "train.csv"), "expected 600 images in every class of train, found 6")
    sampler = EpisodeSampler(torch.from_numpy(data["train_images"]), torch.arange(3), 3, 1, 5, seed=0)
    assert sampler.sample().query_x.shape[0] == 15  # 1 + 5 of the 6 images of each training class


def test_miniimagenet_overlapping_splits(tmp_path):
    src = make_miniimagenet(tmp_path / "raw")
    val = (src / "val.csv").read_text().splitlines()
    train = (src / "train.csv").read_text().splitlines()
    (src / "val.csv").write_text("\n".join(val[:5] + train[1:5]) + "\n")
    assert_fails(prepare_small_mini, src, tmp_path / "out" / "m.npz", "disjoint")


# ---------------------------------------------------------------- sources


def test_find_source_local_and_cache(tmp_path, monkeypatch):
    local = make_omniglot(tmp_path / "local")
    assert datasets.find_source("omniglot", local) == local
    mini = make_miniimagenet(tmp_path / "mini")
    assert datasets.find_source("miniimagenet", mini) == mini

    calls = []

    def fake_download(folder):
        calls.append(Path(folder))
        return make_omniglot(Path(folder))

    monkeypatch.setattr(datasets, "download_omniglot", fake_download)
    cache = tmp_path / "cache"
    found = datasets.find_source("omniglot", tmp_path / "empty", cache_dir=cache)
    assert found == cache / "omniglot" and calls == [cache / "omniglot"]
    assert datasets.find_source("omniglot", cache_dir=cache) == cache / "omniglot"
    assert len(calls) == 1  # second time served from the cache


def test_find_source_miniimagenet_explains(tmp_path):
    with pytest.raises(DataError, match="no official direct download") as info:
        datasets.find_source("miniimagenet", tmp_path)
    assert "prepare.data_dir" in str(info.value) and "images.zip" in str(info.value)
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.find_source("cifar")


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="network unreachable"):
        datasets.download_omniglot(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


# ---------------------------------------------------------------- splits


def fake_omniglot_meta() -> dict:
    return {"archives": np.array(["background"] * 964 + ["evaluation"] * 659)}


def characters(classes: torch.Tensor) -> set[int]:
    return set(classes[:, 0].tolist())


def test_maml_split():
    splits = datasets.omniglot_split(fake_omniglot_meta())
    train, val, test = (characters(splits[s]) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1100, 100, 423)
    assert len(train | val) == 1200 and not (train & val or train & test or val & test)
    assert train | val | test == set(range(1623))
    # both archives are pooled into training
    assert any(c < 964 for c in test) and any(c >= 964 for c in train)
    for split in splits.values():  # 4 rotations of every character: 4x classes
        assert split.dtype == torch.int64 and split.shape[1] == 2
        assert len(split) == 4 * len(characters(split)) == len({tuple(r) for r in split.tolist()})
        assert set(split[:, 1].tolist()) == {0, 1, 2, 3}
    no_val = datasets.omniglot_split(fake_omniglot_meta(), n_val=0, rotations=(0,))
    assert (len(no_val["train"]), len(no_val["val"]), len(no_val["test"])) == (1200, 0, 423)


def test_split_is_deterministic():
    a = datasets.omniglot_split(fake_omniglot_meta(), seed=1)
    b = datasets.omniglot_split(fake_omniglot_meta(), seed=1)
    c = datasets.omniglot_split(fake_omniglot_meta(), seed=2)
    assert all(torch.equal(a[s], b[s]) for s in a)
    assert not torch.equal(a["test"], c["test"])


def test_official_split():
    splits = datasets.omniglot_split(fake_omniglot_meta(), mode="official", n_val=50)
    train, val, test = (characters(splits[s]) for s in ("train", "val", "test"))
    assert test == set(range(964, 1623))
    assert len(val) == 50 and train | val == set(range(964)) and not train & val
    assert len(splits["test"]) == 4 * 659
    with pytest.raises(ValueError, match="mode"):
        datasets.omniglot_split(fake_omniglot_meta(), mode="random")
    with pytest.raises(ValueError, match="rotations"):
        datasets.omniglot_split(fake_omniglot_meta(), rotations=(0, 4))


# ---------------------------------------------------------------- episodes


def tagged_images(n_classes=10, per_class=8, size=6) -> torch.Tensor:
    """uint8 [n, p, size, size]: pixel (0, 0) = class, pixel (0, 1) = image index."""
    images = torch.zeros(n_classes, per_class, size, size, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(n_classes)[:, None]
    images[:, :, 0, 1] = torch.arange(per_class)[None, :]
    return images


def test_episode_shapes_and_labels():
    sampler = EpisodeSampler(tagged_images(), torch.arange(10), n_way=5, k_shot=2, n_query=3, seed=0)
    sx, sy, qx, qy = sampler.sample()
    assert sx.shape == (10, 1, 6, 6) and qx.shape == (15, 1, 6, 6)
    assert sx.dtype == qx.dtype == torch.float32 and sy.dtype == qy.dtype == torch.int64
    assert torch.equal(torch.bincount(sy), torch.full((5,), 2))
    assert torch.equal(torch.bincount(qy), torch.full((5,), 3))
    # one class per label, consistent between support and query; images distinct
    sc, qc = (sx[:, 0, 0, 0] * 255).round().long(), (qx[:, 0, 0, 0] * 255).round().long()
    for label in range(5):
        assert len(set(sc[sy == label].tolist()) | set(qc[qy == label].tolist())) == 1
    assert len(set(sc.tolist())) == 5
    ids = lambda x: {(round(a * 255), round(b * 255)) for a, b in x[:, 0, 0, :2].tolist()}
    assert len(ids(sx)) == 10 and len(ids(qx)) == 15 and not ids(sx) & ids(qx)


def test_episode_label_assignment_is_random():
    sampler = EpisodeSampler(tagged_images(), [0, 1, 2, 3, 4], n_way=5, k_shot=1, n_query=1, seed=0)
    orders = {tuple((xs[:, 0, 0, 0] * 255).round().long().tolist())
              for xs in sampler.fixed_episodes(20, seed=3).xs}
    assert len(orders) > 1  # the same 5 classes get different labels across episodes


def test_episodes_reproducible():
    make = lambda seed: EpisodeSampler(tagged_images(), torch.arange(10), 5, 1, 2, seed=seed)
    a, b, c = make(0), make(0), make(1)
    for _ in range(3):
        ea, eb, ec = a.sample(), b.sample(), c.sample()
        assert all(torch.equal(x, y) for x, y in zip(ea, eb))
    assert not torch.equal(ea.support_x, ec.support_x) or not torch.equal(ea.query_x, ec.query_x)
    fixed1, fixed2 = a.fixed_episodes(4, seed=7), c.fixed_episodes(4, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(fixed1, fixed2))
    other = a.fixed_episodes(4, seed=8)
    assert not torch.equal(fixed1.xq, other.xq)
    # fixed_episodes does not advance the sampler's own stream
    before = make(5)
    after = make(5)
    after.fixed_episodes(3, seed=0)
    assert torch.equal(before.sample().support_x, after.sample().support_x)


def test_batch_stacks_the_episodes_of_the_same_stream():
    images = tagged_images()
    batch = EpisodeSampler(images, torch.arange(10), 3, 2, 1, seed=4).batch(5)
    single = EpisodeSampler(images, torch.arange(10), 3, 2, 1, seed=4)
    episodes = [single.sample() for _ in range(5)]
    assert batch.xs.shape == (5, 6, 1, *images.shape[2:]) and batch.yq.shape == (5, 3)
    for field, index in (("xs", 0), ("ys", 1), ("xq", 2), ("yq", 3)):
        assert torch.equal(getattr(batch, field), torch.stack([e[index] for e in episodes]))
    # the drawn classes: support images of label i come from class task[t, i]
    ids = (batch.xs[..., 0, 0, 0] * 255).round().long()  # the tag of each image's class
    tags = (torch.as_tensor(images)[batch.task[..., 0], 0, 0, 0]).long()  # [T, N]
    assert torch.equal(ids, tags.repeat_interleave(2, dim=1))


def test_episode_rotations():
    images = torch.randint(0, 256, (3, 4, 5, 5), dtype=torch.uint8)
    sampler = EpisodeSampler(images, [[1, 1]], n_way=1, k_shot=2, n_query=2, seed=0)
    episode = sampler.sample()
    originals = torch.rot90(images[1].float() / 255, 1, dims=(-2, -1))  # [4, 5, 5]
    for x in torch.cat([episode.support_x, episode.query_x])[:, 0]:
        assert any(torch.equal(x, o) for o in originals)
    assert not any(torch.equal(x, images[1, i].float() / 255)
                   for x in episode.support_x[:, 0] for i in range(4))


def test_episode_channels_last_rgb():
    images = np.zeros((4, 5, 8, 8, 3), np.uint8)
    images[..., 0], images[..., 2] = 255, 10  # red channel full
    sampler = EpisodeSampler(images, np.arange(4), n_way=3, k_shot=1, n_query=4, seed=0)
    sx, _, qx, qy = sampler.sample()
    assert sx.shape == (3, 3, 8, 8) and qx.shape == (12, 3, 8, 8) and len(qy) == 12
    assert (sx[:, 0] == 1).all() and (sx[:, 1] == 0).all() and torch.allclose(sx[:, 2], torch.tensor(10 / 255))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_way=11), "n_way=11 is larger than the 10 classes"),
    (dict(k_shot=5, n_query=4), "larger than the 8 images per class"),
    (dict(n_way=0), "n_way must be a positive integer"),
    (dict(k_shot=-1), "k_shot must be a positive integer"),
    (dict(n_query=0), "n_query must be a positive integer"),
    (dict(n_way=2.0), "n_way must be a positive integer"),
])
def test_sampler_bad_input(kwargs, message):
    args = dict(n_way=5, k_shot=1, n_query=1) | kwargs
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(tagged_images(), torch.arange(10), seed=0, **args)


def test_sampler_bad_data():
    with pytest.raises(ValueError, match="uint8"):
        EpisodeSampler(tagged_images().float(), torch.arange(10), 2, 1, 1)
    with pytest.raises(ValueError, match="class indices"):
        EpisodeSampler(tagged_images(), torch.arange(11), 2, 1, 1)
    with pytest.raises(ValueError, match="quarter turns"):
        EpisodeSampler(tagged_images(), [[0, 4], [1, 0]], 2, 1, 1)
    with pytest.raises(ValueError, match="shape"):
        EpisodeSampler(tagged_images()[0], torch.arange(8), 2, 1, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_sampler_on_gpu():
    images = tagged_images().cuda()
    sampler = EpisodeSampler(images, torch.tensor([[c, k] for c in range(10) for k in range(4)]),
                             5, 1, 3, seed=0)
    cpu = EpisodeSampler(images.cpu(), sampler.classes, 5, 1, 3, seed=0)
    for gpu_tensor, cpu_tensor in zip(sampler.sample(), cpu.sample()):
        assert gpu_tensor.is_cuda and torch.equal(gpu_tensor.cpu(), cpu_tensor)


# ---------------------------------------------------------------- real data (when present)


@pytest.mark.stage("prepare")
@pytest.mark.skipif(not (REAL / "omniglot" / "images_evaluation.zip").is_file(),
                    reason="real Omniglot archives absent")
def test_real_omniglot():
    """What the prepare stage made of the real archives (in pipeline order, right after its notebook)."""
    data = datasets.load(paths.input("data/prepared/omniglot.npz"))
    assert data["images"].shape == (1623, 20, 28, 28)
    assert (data["archives"] == "background").sum() == 964
    assert len(set(data["alphabets"][data["archives"] == "background"])) == 30
    assert len(set(data["alphabets"][data["archives"] == "evaluation"])) == 20
    assert 0.03 < data["images"].mean() / 255 < 0.2  # mostly background (0), some ink
    splits = datasets.omniglot_split(data)
    assert [len(characters(splits[s])) for s in ("train", "val", "test")] == [1100, 100, 423]
    sampler = EpisodeSampler(data["images"], splits["train"], n_way=20, k_shot=1, n_query=19, seed=0)
    assert sampler.sample().query_x.shape == (380, 1, 28, 28)
    with zipfile.ZipFile(REAL / "omniglot" / "images_background.zip") as archive:  # one outside image, prepared alike
        first = sorted(m for m in archive.namelist() if m.endswith(".png") and m.split("/")[1] == data["alphabets"][0]
                       and m.split("/")[2] == data["characters"][0])
        for drawing, member in enumerate(first[:3]):
            image = Image.open(io.BytesIO(archive.read(member)))
            assert np.array_equal(datasets.omniglot_image(image, resample=str(data["resample"])),
                                  data["images"][0, drawing])


@pytest.mark.skipif(os.environ.get("METALEARN_REAL_DATA") != "1"
                    or not (REAL / "miniimagenet" / "images.zip").is_file(),
                    reason="set METALEARN_REAL_DATA=1 (and provide the data) for the real MiniImageNet")
def test_real_miniimagenet(tmp_path):
    summary = datasets.prepare_miniimagenet(REAL / "miniimagenet", tmp_path / "mini.npz")
    assert summary["per_class"] == 100 and summary["classes"] == {"train": 64, "val": 16, "test": 20}
    data = datasets.load(summary["path"])
    assert data["train_images"].shape == (64, 100, 84, 84, 3)
    assert data["test_images"].shape == (20, 100, 84, 84, 3)
    assert not set(data["train_classes"]) & set(data["test_classes"])


# ---------------------------------------------------------------- one outside image, prepared like the data


def test_an_outside_image_is_prepared_as_omniglot_grey_resized_and_inverted():
    white, black = Image.new("L", (105, 105), 255), Image.new("RGB", (105, 105), (0, 0, 0))
    assert (datasets.omniglot_image(white) == 0).all() and (datasets.omniglot_image(black) == 255).all()
    half = np.full((104, 104), 255, np.uint8)
    half[:, :52] = 0  # black ink on the left half
    small = datasets.omniglot_image(Image.fromarray(half), size=26, resample="nearest")
    assert small.shape == (26, 26) and small.dtype == np.uint8
    assert (small[:, :13] == 255).all() and (small[:, 13:] == 0).all()
    with pytest.raises(ValueError, match="resample must be one of"):
        datasets.omniglot_image(white, resample="cubic")


def test_an_outside_image_is_prepared_as_miniimagenet_rgb_and_84_square():
    rgb = np.random.default_rng(0).integers(0, 256, (84, 84, 3), dtype=np.uint8)
    assert np.array_equal(datasets.miniimagenet_image(Image.fromarray(rgb)), rgb)  # the archive's images: as they are
    grey = datasets.miniimagenet_image(Image.new("L", (105, 105), 200))
    assert grey.shape == (84, 84, 3) and (grey == 200).all()
    with pytest.raises(ValueError, match="resample must be one of"):
        datasets.miniimagenet_image(Image.fromarray(rgb), resample="cubic")
