# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Prepare: real Omniglot and MiniImageNet, checked by content, packed as uint8 arrays
#
# Reads the raw archives in their official layouts, never extracting them to disk:
# * **Omniglot** (Lake et al.): `images_background.zip` (30 alphabets, 964 characters) and
#   `images_evaluation.zip` (20 alphabets, 659 characters), 20 drawings of 105x105 each,
#   resized to 28x28 and inverted (ink = 255). When `data_dir/omniglot` lacks them they are
#   downloaded from the official repository (brendenlake/omniglot) into the user cache.
# * **MiniImageNet** (Ravi & Larochelle split): `images.zip` + `train.csv`, `val.csv`,
#   `test.csv`, 84x84 RGB, 64/16/20 classes. The shared copy holds the first 100 images
#   of each class (not 600): every MiniImageNet result of the study says so.
#
# Every count and size is checked against the official release; a missing, truncated or
# wrong archive stops the stage with one message saying what was expected and where,
# and no output is written. `data_dir` (relative to the repository root, or absolute)
# is the one setting that points the study at its data.

# %% tags=["parameters"]
data_dir = "../shared/data"    # folder holding omniglot/ and miniimagenet/ with the raw archives
omniglot_size = 28             # Omniglot side after resizing, as in the MAML paper
omniglot_resample = "lanczos"  # resampling filter: lanczos, bilinear, or nearest

# %%
from pathlib import Path

from metalearn import paths
from metalearn.params import Choice, Int, Str, check, require

P = check(globals(), data_dir=Str(), omniglot_size=Int(min=8), omniglot_resample=Choice("lanczos", "bilinear", "nearest"))
source = Path(P.data_dir) if Path(P.data_dir).is_absolute() else paths.ROOT / P.data_dir
require(source.is_dir(), "data_dir", f"is {P.data_dir!r}, but {source} is not a folder: point prepare.data_dir "
        "(params.yaml) at the folder that holds omniglot/ and miniimagenet/ with the raw archives")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from metalearn import datasets, report

STAGE = "prepare"
omniglot = datasets.prepare_omniglot(datasets.find_source("omniglot", source / "omniglot"),
                                     paths.output("data/prepared/omniglot.npz"),
                                     size=P.omniglot_size, resample=P.omniglot_resample)
mini = datasets.prepare_miniimagenet(datasets.find_source("miniimagenet", source / "miniimagenet"),
                                     paths.output("data/prepared/miniimagenet.npz"))
omni_data = datasets.load(omniglot["path"])
mini_data = datasets.load(mini["path"])

# %% [markdown]
# ## What was read

# %%
archives = pd.DataFrame({"archive": omni_data["archives"], "alphabet": omni_data["alphabets"]})
summary = archives.groupby("archive").agg(alphabets=("alphabet", "nunique"), characters=("alphabet", "size"))
summary["drawings per character"] = omniglot["drawings"]
summary["size"] = f"{P.omniglot_size}x{P.omniglot_size} ({P.omniglot_resample})"
split_counts = {s: mini_data[f"{s}_images"].shape for s in ("train", "val", "test")}
mini_summary = pd.DataFrame({s: {"classes": shape[0], "images per class": shape[1], "size": f"{shape[2]}x{shape[3]}x{shape[4]}"}
                             for s, shape in split_counts.items()}).T
display(summary)
display(mini_summary)

# %%
fig, axes = plt.subplots(2, 8, figsize=(10, 2.8))
pick = np.linspace(0, len(omni_data["images"]) - 1, 8).astype(int)
for col, c in enumerate(pick):
    for row in range(2):
        axes[row, col].imshow(omni_data["images"][c, row], cmap="gray_r")
        axes[row, col].axis("off")
    axes[0, col].set_title(f"{omni_data['alphabets'][c][:12]}\n{omni_data['characters'][c]}", fontsize=6)
fig.suptitle(f"Omniglot after preparation: two drawings of 8 characters ({P.omniglot_size}x{P.omniglot_size})", fontsize=8)
report.save_figure(fig, f"reports/{STAGE}/omniglot_samples.png")

fig, axes = plt.subplots(3, 8, figsize=(10, 4))
for row, split in enumerate(("train", "val", "test")):
    images = mini_data[f"{split}_images"]
    for col, c in enumerate(np.linspace(0, len(images) - 1, 8).astype(int)):
        axes[row, col].imshow(images[c, 0])
        axes[row, col].axis("off")
    axes[row, 0].set_title(split, fontsize=7, loc="left")
fig.suptitle(f"MiniImageNet: one image of 8 classes per split ({mini['per_class']} images per class)", fontsize=8)
report.save_figure(fig, f"reports/{STAGE}/miniimagenet_samples.png")

# %%
metrics = {
    "omniglot_characters": int(len(omni_data["images"])),
    "omniglot_alphabets": int(archives.alphabet.nunique()),
    "omniglot_drawings": int(omniglot["drawings"]),
    "miniimagenet_classes": {s: int(shape[0]) for s, shape in split_counts.items()},
    "miniimagenet_images_per_class": int(mini["per_class"]),
}
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
metrics
