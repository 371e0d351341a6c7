"""Few-shot image data: check and pack the raw archives, split classes, sample episodes.

One entry point per job:

* :func:`find_source` -- the folder holding the raw archives (a local folder, or the
  download cache; only Omniglot can be downloaded, see :func:`download_omniglot`).
* :func:`prepare_omniglot`, :func:`prepare_miniimagenet` -- read the raw zips directly
  (nothing is extracted), check them by content, write one compressed ``.npz``.
  Any problem raises :class:`DataError` (expected what, where, found what) and
  leaves no output behind: the ``.npz`` appears only when complete.
* :func:`load` -- an ``.npz`` as a dict of numpy arrays; :func:`fingerprint` -- their identity.
* :func:`omniglot_split` -- train/val/test classes as ``(character, rotation)`` pairs.
* :class:`EpisodeSampler` -- seeded N-way K-shot episodes from a uint8 tensor.

Conventions
-----------
Pixels are stored as uint8 and become float32 in [0, 1] (``x / 255``) per episode.
Omniglot is inverted as in the MAML code (``image = 1.0 - image``): ink = 1 (255),
background = 0. Omniglot is resized 105 -> 28 with PIL LANCZOS on the grayscale
image (as learn2learn does), so strokes are anti-aliased. Note: MAML's own
``resize_images.py`` asked for LANCZOS on the 1-bit PNGs, which Pillow silently
replaces by NEAREST for mode "1"; ``resample="nearest"`` reproduces those binary
images. MiniImageNet is stored as given (RGB, no normalisation, as in MAML).

``.npz`` layouts
----------------
Omniglot: ``images`` uint8 [1623, 20, 28, 28]; per character ``alphabets``,
``characters`` (e.g. ``character01``), ``archives`` (``background``/``evaluation``),
all str [1623]; ``resample`` str []. Characters are ordered background archive
first, then evaluation; alphabets, characters and drawings sorted by name.

MiniImageNet: per split ``s`` in train/val/test: ``s_images`` uint8
[n_classes, n_per_class, 84, 84, 3] (``n_per_class`` may differ between splits: 600 / 100 / 100
in the copy with every training image), ``s_classes`` str [n_classes] (wnids, in
order of first appearance in ``s.csv``), ``s_files`` str [n_classes, n_per_class]
(images in csv order).
"""
from __future__ import annotations

import csv
import hashlib
import io
import numbers
import os
import urllib.request
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .paths import atomic_write
from .tasks import Batch


class DataError(ValueError):
    """The raw data is missing, unreadable, or not what was expected."""


OMNIGLOT_URLS = {
    "images_background": "https://github.com/brendenlake/omniglot/raw/master/python/images_background.zip",
    "images_evaluation": "https://github.com/brendenlake/omniglot/raw/master/python/images_evaluation.zip",
}
#: archive -> (alphabets, characters) in the official Omniglot release
OMNIGLOT_COUNTS = {"images_background": (30, 964), "images_evaluation": (20, 659)}
#: split -> classes in the Ravi & Larochelle MiniImageNet split
MINIIMAGENET_CLASSES = {"train": 64, "val": 16, "test": 20}
#: images per class in the full MiniImageNet release (the shared full copy has them for its training classes)
MINIIMAGENET_PER_CLASS = 600
MINIIMAGENET_FILES = ("images.zip", "train.csv", "val.csv", "test.csv")
RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}
#: errors that mean "this archive or image is damaged"
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, SyntaxError,
                NotImplementedError, RuntimeError)


# ---------------------------------------------------------------- sources


def default_cache() -> Path:
    """``$METALEARN_CACHE``, else ``~/.cache/metalearn``: where downloads go."""
    return Path(os.environ.get("METALEARN_CACHE", Path.home() / ".cache" / "metalearn"))


def find_source(dataset: str, local_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ``dataset``'s raw files ("omniglot" or "miniimagenet").

    ``local_dir`` is returned if it holds the expected files (only their presence is
    checked here; the content is checked by ``prepare_*``). Otherwise Omniglot is
    taken from, or downloaded to, ``cache_dir/omniglot`` (default :func:`default_cache`);
    MiniImageNet has no official download, so a :class:`DataError` says where to get it.
    """
    if dataset == "omniglot":
        names = [f"{root}.zip" for root in OMNIGLOT_URLS]
    elif dataset == "miniimagenet":
        names = list(MINIIMAGENET_FILES)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'omniglot' or 'miniimagenet'")
    tried = []
    if local_dir is not None:
        local_dir = Path(local_dir)
        missing = [name for name in names if not (local_dir / name).is_file()]
        if not missing:
            return local_dir
        tried.append(f"{local_dir} lacks {', '.join(missing)}")
    if dataset == "miniimagenet":
        raise DataError(
            "MiniImageNet has no official direct download. Get the Ravi & Larochelle split "
            "(images.zip holding images/<file>.jpg at 84x84, plus train.csv, val.csv, test.csv "
            "with 'filename,label'; see https://github.com/twitter/meta-learning-lstm and the "
            "MAML repository's data/miniImagenet/proc_images.py, ImageNet terms apply) and put the "
            "four files in <prepare.data_dir>/miniimagenet/ (prepare.data_dir in params.yaml). "
            + ("; ".join(tried) if tried else "No folder was given.")
        )
    cache = Path(cache_dir) if cache_dir is not None else default_cache()
    cached = cache / "omniglot"
    if all((cached / name).is_file() for name in names):
        return cached
    return download_omniglot(cached)


def download_omniglot(folder: str | os.PathLike) -> Path:
    """Download the two official Omniglot zips into ``folder`` (needs network).

    Each file is written to a temporary name and renamed when complete. Network
    failures raise :class:`DataError` naming the URL and the offline alternative.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for root, url in OMNIGLOT_URLS.items():
        target = folder / f"{root}.zip"
        if target.is_file():
            continue
        try:
            with urllib.request.urlopen(url, timeout=60) as response, \
                    atomic_write(target, "wb") as handle:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
        except OSError as error:
            raise DataError(
                f"cannot download {url} to {target} ({error}); without network, put "
                f"images_background.zip and images_evaluation.zip in <prepare.data_dir>/omniglot/ "
                f"(prepare.data_dir in params.yaml)"
            ) from error
    return folder


# ---------------------------------------------------------------- preparation


def prepare_omniglot(src_dir: str | os.PathLike, out_path: str | os.PathLike, size: int = 28,
                     resample: str = "lanczos",
                     counts: Mapping[str, tuple[int, int]] = OMNIGLOT_COUNTS,
                     n_drawings: int = 20, image_size: int = 105) -> dict:
    """Check the two Omniglot zips in ``src_dir`` and write ``images`` [C, 20, size, size].

    ``counts`` maps each archive (``images_background``, ``images_evaluation``) to its
    expected (alphabets, characters); with ``n_drawings`` and ``image_size`` these are
    the official values by default (tests pass small ones). ``resample`` is one of
    ``lanczos`` (default), ``bilinear``, ``nearest`` (= MAML's effective filter).
    Returns a summary: path, characters, drawings, size.
    """
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    src_dir = Path(src_dir)
    blocks, alphabets, characters, archives = [], [], [], []
    for root, (n_alphabets, n_characters) in counts.items():
        path = src_dir / f"{root}.zip"
        with _open_zip(path) as archive:
            index = _omniglot_index(archive, path, root, n_alphabets, n_characters, n_drawings)
            block = np.empty((len(index), n_drawings, size, size), np.uint8)
            for c, ((alphabet, character), members) in enumerate(index.items()):
                for d, member in enumerate(members):
                    image = _read_image(archive, path, member)
                    if image.size != (image_size, image_size):
                        raise DataError(f"{path}: {member} is {image.size[0]}x{image.size[1]}, "
                                        f"expected {image_size}x{image_size}")
                    block[c, d] = omniglot_image(image, size, resample)
                alphabets.append(alphabet)
                characters.append(character)
                archives.append(root.removeprefix("images_"))
        blocks.append(block)
    images = np.concatenate(blocks)
    _save_npz(out_path, images=images, alphabets=np.array(alphabets), resample=np.array(resample),
              characters=np.array(characters), archives=np.array(archives))
    return {"path": Path(out_path), "characters": len(images), "drawings": n_drawings, "size": size}


def omniglot_image(image: Image.Image, size: int = 28, resample: str = "lanczos") -> np.ndarray:
    """One image as :func:`prepare_omniglot` prepares every Omniglot drawing: grey, resized to
    ``size`` x ``size`` with ``resample``, inverted (ink = 255, background = 0) -> uint8 [size, size].
    Any outside image (another benchmark's) goes through it to be tested like Omniglot."""
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    return 255 - np.asarray(image.convert("L").resize((size, size), RESAMPLE[resample]))


def miniimagenet_image(image: Image.Image, image_size: int = 84, resample: str = "lanczos") -> np.ndarray:
    """One image as the prepared MiniImageNet holds its images: RGB, ``image_size`` square (the
    archive's images already are, and are kept as they are; another image is resized with
    ``resample``) -> uint8 [image_size, image_size, 3]."""
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), RESAMPLE[resample])
    return np.asarray(image)


def prepare_miniimagenet(src_dir: str | os.PathLike, out_path: str | os.PathLike,
                         classes: Mapping[str, int] = MINIIMAGENET_CLASSES,
                         per_class: int | Mapping[str, int] | None = None, image_size: int = 84) -> dict:
    """Check ``images.zip`` + ``train/val/test.csv`` in ``src_dir``; write per-split arrays.

    ``classes`` is the expected number of classes per split (64/16/20). Every class of a split
    must have the same number of images, the number its csv lists; splits may differ (a copy
    with all 600 images of each training class and 100 of each test class). ``per_class``
    makes a count required: one number for every split, or {split: number} for some (e.g.
    ``{"train": 600}`` for a source that claims every training image). Images must be
    ``image_size`` square RGB. Returns a summary: path, per_class {split: images per class},
    classes {split: classes}.
    """
    src_dir = Path(src_dir)
    splits = {split: _read_split_csv(src_dir / f"{split}.csv") for split in classes}
    counts = _check_miniimagenet_index(splits, src_dir, classes, per_class)
    path = src_dir / "images.zip"
    arrays = {}
    with _open_zip(path) as archive:
        present = set(archive.namelist())
        for split, groups in splits.items():
            missing = [f for files in groups.values() for f in files if f"images/{f}" not in present]
            if missing:
                raise DataError(f"{path}: {len(missing)} images listed in {src_dir / f'{split}.csv'} are missing "
                                f"from the archive (expected images/<filename>), e.g. {missing[:3]}")
        for split, groups in splits.items():
            images = np.empty((len(groups), counts[split], image_size, image_size, 3), np.uint8)
            for c, files in enumerate(groups.values()):
                for i, name in enumerate(files):
                    image = _read_image(archive, path, f"images/{name}")
                    if image.size != (image_size, image_size) or image.mode != "RGB":
                        raise DataError(
                            f"{path}: images/{name} is {image.size[0]}x{image.size[1]} "
                            f"{image.mode}, expected {image_size}x{image_size} RGB")
                    images[c, i] = miniimagenet_image(image, image_size)
            arrays[f"{split}_images"] = images
            arrays[f"{split}_classes"] = np.array(list(groups))
            arrays[f"{split}_files"] = np.array(list(groups.values()))
    _save_npz(out_path, **arrays)
    return {"path": Path(out_path), "per_class": counts,
            "classes": {split: len(groups) for split, groups in splits.items()}}


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a prepared ``.npz`` (see the module docstring for the layouts)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no prepared data at {path}; run prepare_omniglot/prepare_miniimagenet")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def describe_miniimagenet(data: Mapping[str, np.ndarray]) -> str:
    """How results name the prepared MiniImageNet they used, from its arrays: e.g. "MiniImageNet
    (64/16/20 classes, 100 images per class, 84x84)", or for the copy with every training image
    "MiniImageNet (64/16/20 classes, 600 training / 100 test images per class, 84x84)"."""
    shapes = {split: data[f"{split}_images"].shape for split in MINIIMAGENET_CLASSES}
    per_class = {split: shape[1] for split, shape in shapes.items()}
    images = (f"{per_class['train']} images per class" if len(set(per_class.values())) == 1 else
              f"{per_class['train']} training / {per_class['test']} test images per class")
    side = shapes["train"][2]
    return f"MiniImageNet ({'/'.join(str(shape[0]) for shape in shapes.values())} classes, {images}, {side}x{side})"


def fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """A short hash of prepared arrays (names, dtypes, shapes, values): the data's identity in
    the records of the models trained on it, whatever file or compression held them."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DataError(f"missing archive: expected {path.name} at {path}")
    try:
        return zipfile.ZipFile(path)
    except _READ_ERRORS as error:
        raise DataError(f"{path} is not a readable zip archive ({error}); it may be truncated "
                        f"or corrupt, fetch it again") from error


def _read_image(archive: zipfile.ZipFile, path: Path, member: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(archive.read(member)))
        image.load()
    except _READ_ERRORS as error:
        raise DataError(f"{path}: cannot read {member} ({error}); the archive may be corrupt") \
            from error
    return image


def _omniglot_index(archive: zipfile.ZipFile, path: Path, root: str, n_alphabets: int,
                    n_characters: int, n_drawings: int) -> dict[tuple[str, str], list[str]]:
    """(alphabet, character) -> sorted drawing members, after checking the layout and counts."""
    index: dict[tuple[str, str], list[str]] = {}
    unexpected = []
    for info in archive.infolist():
        parts = info.filename.split("/")
        if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        if len(parts) != 4 or parts[0] != root or not parts[3].lower().endswith(".png"):
            unexpected.append(info.filename)
            continue
        index.setdefault((parts[1], parts[2]), []).append(info.filename)
    if unexpected:
        raise DataError(f"{path}: expected only {root}/<alphabet>/<character>/<drawing>.png, "
                        f"found {len(unexpected)} other files, e.g. {unexpected[:3]}")
    found_alphabets = len({alphabet for alphabet, _ in index})
    wrong = {f"{a}/{c}": len(m) for (a, c), m in sorted(index.items()) if len(m) != n_drawings}
    if found_alphabets != n_alphabets or len(index) != n_characters or wrong:
        detail = f", {len(wrong)} characters with another number of drawings, e.g. " \
            f"{dict(list(wrong.items())[:3])}" if wrong else ""
        raise DataError(f"{path}: expected {n_alphabets} alphabets, {n_characters} characters, "
                        f"{n_drawings} drawings each; found {found_alphabets} alphabets, "
                        f"{len(index)} characters{detail}")
    return {key: sorted(index[key]) for key in sorted(index)}


def _read_split_csv(path: Path) -> dict[str, list[str]]:
    """label -> filenames, in csv order, from a ``filename,label`` csv."""
    if not path.is_file():
        raise DataError(f"missing split file: expected {path.name} at {path}")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"]:
        raise DataError(f"{path}: expected the header 'filename,label', found {rows[:1]}")
    groups: dict[str, list[str]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise DataError(f"{path}, line {number}: expected 'filename,label', found {row}")
        groups.setdefault(row[1].strip(), []).append(row[0].strip())
    return groups


def _check_miniimagenet_index(splits: dict[str, dict[str, list[str]]], src_dir: Path,
                              classes: Mapping[str, int], per_class: int | Mapping[str, int] | None) -> dict[str, int]:
    """Check class counts, equal images per class within each split (and the counts
    ``per_class`` requires), disjoint splits; return the images per class of each split."""
    found = {split: len(groups) for split, groups in splits.items()}
    if found != dict(classes):
        raise DataError(f"{src_dir}: expected classes per split {dict(classes)}, found {found}")
    required = per_class if isinstance(per_class, Mapping) else {split: per_class for split in splits}
    counts = {}
    for split, groups in splits.items():
        csv_path = src_dir / f"{split}.csv"
        sizes = {label: len(files) for label, files in groups.items()}
        common = Counter(sizes.values()).most_common(1)[0][0]  # ties: the first class's count
        odd = {label: n for label, n in sizes.items() if n != common}
        if odd:
            label, n = next(iter(odd.items()))
            raise DataError(f"{csv_path}: expected the same number of images in every class of {split} "
                            f"({common}, as most of its classes), but {label} has {n}"
                            + (f" ({len(odd)} classes differ)" if len(odd) > 1 else ""))
        if required.get(split) is not None and common != required[split]:
            raise DataError(f"{csv_path}: expected {required[split]} images in every class of {split}, "
                            f"found {common}")
        counts[split] = common
    labels = [label for groups in splits.values() for label in groups]
    files = [f for groups in splits.values() for fs in groups.values() for f in fs]
    if len(set(labels)) != len(labels) or len(set(files)) != len(files):
        raise DataError(f"{src_dir}: expected disjoint splits, but a class or an image is "
                        f"listed twice across {', '.join(f'{s}.csv' for s in splits)}")
    return counts


def _save_npz(out_path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed``, byte for byte reproducible: every entry carries the same date,
    so the same arrays always give the same file (and DVC sees no change when a fresh clone
    prepares the data again). Each array is streamed into the archive, never copied whole."""
    with atomic_write(Path(out_path), "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as stream:
                np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)


# ---------------------------------------------------------------- splits


def omniglot_split(data: Mapping[str, np.ndarray], mode: str = "maml", seed: int = 1,
                   n_train: int = 1200, n_val: int = 100,
                   rotations: Sequence[int] = (0, 1, 2, 3)) -> dict[str, Tensor]:
    """Train/val/test classes of Omniglot, each int64 [n_classes, 2] of (character, k).

    A class is a character rotated by ``k`` quarter turns (counter-clockwise); every
    character appears once per ``k`` in ``rotations`` (4x classes by default).
    Characters of a split are sorted; rotations vary fastest.

    ``mode="maml"`` (as in MAML's code): the characters of both archives are pooled and
    shuffled with ``seed``; the first ``n_train`` (1200) are for meta-training, of
    which the last ``n_val`` (100) are held out as validation, so train has 1100 and
    val 100; the other 423 are the test set. (MAML used Python's ``random.seed(1)`` on
    a directory listing, so its exact split cannot be reproduced; this one is a seeded
    ``torch.randperm``.)
    ``mode="official"``: the background archive (30 alphabets) is for training and the
    evaluation archive (20 alphabets) for test, an alphabet-level split; ``n_val``
    background characters chosen with ``seed`` are the validation set; ``n_train``
    is unused.
    """
    archives = np.asarray(data["archives"])
    n = len(archives)
    if not set(rotations) <= {0, 1, 2, 3} or len(set(rotations)) != len(rotations) or not rotations:
        raise ValueError(f"rotations must be distinct quarter turns in 0..3, got {rotations}")
    generator = torch.Generator().manual_seed(seed)
    if mode == "maml":
        if not 0 <= n_val < n_train <= n:
            raise ValueError(f"need 0 <= n_val < n_train <= {n} characters, got n_val={n_val}, "
                             f"n_train={n_train}")
        order = torch.randperm(n, generator=generator)
        chars = {"train": order[:n_train - n_val], "val": order[n_train - n_val:n_train],
                 "test": order[n_train:]}
    elif mode == "official":
        background = torch.from_numpy(np.flatnonzero(archives == "background"))
        evaluation = torch.from_numpy(np.flatnonzero(archives == "evaluation"))
        if not 0 <= n_val < len(background):
            raise ValueError(f"n_val must be in 0..{len(background) - 1}, got {n_val}")
        order = background[torch.randperm(len(background), generator=generator)]
        chars = {"train": order[n_val:], "val": order[:n_val], "test": evaluation}
    else:
        raise ValueError(f"mode must be 'maml' or 'official', got {mode!r}")
    ks = torch.tensor(list(rotations), dtype=torch.long)
    return {
        split: torch.stack([c.sort().values.long().repeat_interleave(len(ks)),
                            ks.repeat(len(c))], dim=1)
        for split, c in chars.items()
    }


# ---------------------------------------------------------------- episodes


class Episode(NamedTuple):
    """One task. Shapes: support [N*K, C, H, W] / [N*K]; query [N*Q, C, H, W] / [N*Q]."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


class EpisodeSampler:
    """Seeded N-way K-shot episodes with Q queries per class.

    ``images_by_class``: uint8 [n_classes, n_per_class, H, W] (grayscale, e.g. Omniglot's
    ``images``) or [n_classes, n_per_class, H, W, C] (channels last, e.g. MiniImageNet's
    ``train_images``), numpy or torch, on any device; episodes are gathered by index on
    that device and converted to float32 ``x / 255`` per episode.
    ``classes``: the classes to draw from, int [M] (rows of ``images_by_class``) or
    [M, 2] (row, quarter turns k) as returned by :func:`omniglot_split`.

    Each episode draws ``n_way`` distinct classes in random order (label i = i-th drawn
    class, so the class-to-label assignment is random) and ``k_shot + n_query``
    distinct images per class: the first ``k_shot`` are support, the rest query
    (disjoint). Rows are grouped by label: ``support_y = [0]*K + [1]*K + ...``.
    Randomness comes only from a CPU ``torch.Generator`` seeded with ``seed``.
    """

    def __init__(self, images_by_class, classes, n_way: int, k_shot: int, n_query: int,
                 seed: int = 0):
        images = torch.as_tensor(images_by_class)
        if images.dtype != torch.uint8:
            raise ValueError(f"images_by_class must be uint8, got {images.dtype}")
        if images.dim() == 4:
            images = images.unsqueeze(2)
        elif images.dim() == 5:
            images = images.permute(0, 1, 4, 2, 3)
        else:
            raise ValueError("images_by_class must be [classes, per_class, H, W] or "
                             f"[classes, per_class, H, W, C], got shape {tuple(images.shape)}")
        classes = torch.as_tensor(classes).long().cpu()
        if classes.dim() == 1:
            classes = torch.stack([classes, torch.zeros_like(classes)], dim=1)
        if classes.dim() != 2 or classes.shape[1] != 2:
            raise ValueError(f"classes must be [M] or [M, 2], got shape {tuple(classes.shape)}")
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("n_query", n_query)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        n_way, k_shot, n_query = int(n_way), int(k_shot), int(n_query)
        if len(classes) and not (0 <= classes[:, 0].min() and classes[:, 0].max() < len(images)):
            raise ValueError(f"class indices must be in 0..{len(images) - 1}")
        if len(classes) and not (0 <= classes[:, 1].min() and classes[:, 1].max() <= 3):
            raise ValueError("rotations must be quarter turns in 0..3")
        if (classes[:, 1] % 2).any() and images.shape[-1] != images.shape[-2]:
            raise ValueError(f"odd quarter turns need square images, got {tuple(images.shape[-2:])}")
        if n_way > len(classes):
            raise ValueError(f"n_way={n_way} is larger than the {len(classes)} classes available")
        if k_shot + n_query > images.shape[1]:
            raise ValueError(f"k_shot + n_query = {k_shot + n_query} is larger than the "
                             f"{images.shape[1]} images per class")
        self.images, self.classes = images, classes
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, generator: torch.Generator | None = None) -> Episode:
        """The next episode from ``generator`` (default: the sampler's own)."""
        return self._sample(generator or self.generator)[0]

    def batch(self, n_tasks: int, generator: torch.Generator | None = None) -> Batch:
        """``n_tasks`` episodes stacked: support [T, N*K, C, H, W] / [T, N*K], query
        [T, N*Q, C, H, W] / [T, N*Q], and the drawn classes [T, N, 2] as ``task``."""
        drawn = [self._sample(generator or self.generator) for _ in range(n_tasks)]
        episodes = [episode for episode, _ in drawn]
        return Batch(*(torch.stack(parts) for parts in zip(*episodes)),
                     torch.stack([chosen for _, chosen in drawn]))

    def fixed_episodes(self, n: int, seed: int) -> Batch:
        """``n`` episodes from a fresh generator seeded with ``seed`` (same seed, same
        tensors), stacked as in :meth:`batch`. Does not advance the sampler's own generator."""
        return self.batch(n, torch.Generator().manual_seed(seed))

    def labelled(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` images drawn uniformly (with replacement) from every image of every class,
        for plain classification over all the sampler's classes (multiclass pre-training):
        x [n, C, H, W] float32 in [0, 1], y [n] int64, the class's position in ``classes``
        (0..M-1, a rotated Omniglot character being its own class)."""
        if not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        generator = generator or self.generator
        y = torch.randint(len(self.classes), (n,), generator=generator)
        picks = torch.randint(self.images.shape[1], (n, 1), generator=generator)
        x = self._gather(self.classes[y], picks)[:, 0]
        return x, y.to(self.images.device)

    def _gather(self, chosen: Tensor, picks: Tensor) -> Tensor:
        """Images ``picks`` [N, P] of the classes ``chosen`` [N, 2] (row, quarter turns),
        rotated: float32 [N, P, C, H, W] in [0, 1] on the images' device."""
        device = self.images.device
        x = self.images[chosen[:, :1].to(device), picks.to(device)]  # [N, P, C, H, W] uint8
        for turns in chosen[:, 1].unique().tolist():
            if turns:
                rows = (chosen[:, 1] == turns).to(device)
                x[rows] = torch.rot90(x[rows], turns, dims=(-2, -1))
        return x.float().div_(255)

    def _sample(self, generator: torch.Generator) -> tuple[Episode, Tensor]:
        n, k, q = self.n_way, self.k_shot, self.n_query
        chosen = self.classes[torch.randperm(len(self.classes), generator=generator)[:n]]  # [N, 2]
        picks = torch.rand(n, self.images.shape[1], generator=generator).argsort(dim=1)[:, :k + q]
        x = self._gather(chosen, picks)
        device = self.images.device
        labels = torch.arange(n, device=device)
        shape = x.shape[2:]
        return Episode(x[:, :k].reshape(n * k, *shape), labels.repeat_interleave(k),
                       x[:, k:].reshape(n * q, *shape), labels.repeat_interleave(q)), chosen
