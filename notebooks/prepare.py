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
#   `test.csv`, 84x84 RGB, 64/16/20 classes, from two copies: `miniimagenet/` with the first
#   100 images of each class (not 600; the default study trains on it, and every result from it
#   says "100 images per class") -> `data/prepared/miniimagenet.npz`; and
#   `miniimagenet-full-train/` with all 600 images of each training class and the same 100 of
#   each validation and test class -> `data/prepared/miniimagenet_full_train.npz` (the papers'
#   training data; results from it say "600 training / 100 test images per class"). Each split
#   is checked to hold the same number of images in every class, the number its csv lists, and
#   the full copy's training classes to hold all 600.
#
# Every count and size is checked against the official release; a missing, truncated or
# wrong archive stops the stage with one message saying what was expected and where,
# and no output is written. `data_dir` (relative to the repository root, or absolute)
# is the one setting that points the study at its data.

# %% tags=["parameters"]
data_dir = "../shared/data"    # folder holding omniglot/ and miniimagenet/ with the raw archives
omniglot_size = 28             # Omniglot side after resizing, as in the MAML paper
omniglot_resample = "lanczos"  # resampling filter: lanczos, bilinear, or nearest
miniimagenet_full_train = ""   # folder in data_dir of the copy with all 600 images per training class ("": skip it; study: miniimagenet-full-train)

# %%
from pathlib import Path

from metalearn import paths
from metalearn.params import Choice, Int, Str, check, require

P = check(globals(), data_dir=Str(), omniglot_size=Int(min=8), omniglot_resample=Choice("lanczos", "bilinear", "nearest"),
          miniimagenet_full_train=lambda name, value: value if value == "" else Str()(name, value))
source = Path(P.data_dir) if Path(P.data_dir).is_absolute() else paths.ROOT / P.data_dir
require(source.is_dir(), "data_dir", f"is {P.data_dir!r}, but {source} is not a folder: point prepare.data_dir "
        "(params.yaml) at the folder that holds omniglot/ and miniimagenet/ with the raw archives")

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from metalearn import datasets, hardware, report, store

STAGE = "prepare"
COPIES = {"miniimagenet": ("miniimagenet", None)}  # prepared name: (folder in data_dir, images required per class)
if P.miniimagenet_full_train:
    COPIES["miniimagenet_full_train"] = (P.miniimagenet_full_train, {"train": datasets.MINIIMAGENET_PER_CLASS})
omniglot, peak = hardware.peak_memory(lambda: datasets.prepare_omniglot(
    datasets.find_source("omniglot", source / "omniglot"), paths.output("data/prepared/omniglot.npz"),
    size=P.omniglot_size, resample=P.omniglot_resample))
memory = {"omniglot": {"preparing": peak}}
copies = {}
for name, (folder, required) in COPIES.items():
    copies[name], peak = hardware.peak_memory(lambda: datasets.prepare_miniimagenet(
        datasets.find_source("miniimagenet", source / folder), paths.output(f"data/prepared/{name}.npz"),
        per_class=required))
    memory[name] = {"preparing": peak}
mini = copies["miniimagenet"]
omni_data = datasets.load(omniglot["path"])
mini_data = datasets.load(mini["path"])

# %% [markdown]
# ## What was read

# %%
archives = pd.DataFrame({"archive": omni_data["archives"], "alphabet": omni_data["alphabets"]})
summary = archives.groupby("archive").agg(alphabets=("alphabet", "nunique"), characters=("alphabet", "size"))
summary["drawings per character"] = omniglot["drawings"]
summary["size"] = f"{P.omniglot_size}x{P.omniglot_size} ({P.omniglot_resample})"
mini_summary = pd.DataFrame([{"copy": name, "split": split, "classes": info["classes"][split],
                              "images per class": info["per_class"][split]}
                             for name, info in copies.items() for split in info["classes"]])
display(summary)
display(mini_summary.pivot(index="copy", columns="split", values=["classes", "images per class"]))

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
fig.suptitle(f"MiniImageNet: one image of 8 classes per split ({datasets.describe_miniimagenet(mini_data)})", fontsize=8)
report.save_figure(fig, f"reports/{STAGE}/miniimagenet_samples.png")

# %% [markdown]
# ## Memory
#
# The most resident memory each step added to this process (sampled every 10 ms): preparing a
# copy (its arrays are built in memory, then streamed into the `.npz`), and using it as the
# training stages do: loading the arrays (kept as uint8; episodes convert only the images they
# draw to float) and drawing a batch of 4 MiniImageNet 5-way 1-shot training episodes with 15
# queries per class (Omniglot: 20-way). Measured when this data was first prepared on this
# hardware (`data/analyses/prepare/`), so that preparing it again leaves the report as it was.

# %%
def sampling(name):
    """Load a prepared copy and draw a batch of training episodes from it."""
    data = datasets.load(paths.output(f"data/prepared/{name}.npz"))
    if name == "omniglot":
        train = datasets.omniglot_split(data)["train"]
        sampler = datasets.EpisodeSampler(torch.from_numpy(data["images"]), train, 20, 1, 15, seed=0)
    else:
        images = torch.from_numpy(data["train_images"])
        sampler = datasets.EpisodeSampler(images, torch.arange(len(images)), 5, 1, 15, seed=0)
    return sampler.batch(4, torch.Generator().manual_seed(0)).xs.shape


for name in memory:
    _, memory[name]["loading and sampling"] = hardware.peak_memory(lambda: sampling(name))
fingerprints = {name: datasets.fingerprint(datasets.load(paths.output(f"data/prepared/{name}.npz"))) for name in memory}
MEMORY = store.result(f"data/analyses/{STAGE}/memory", {"data": fingerprints, "hardware": hardware.describe("cpu")},
                      lambda: memory)
pd.DataFrame(MEMORY).T.map(lambda m: f"{m / 2 ** 20:.0f} MiB")

# %%
metrics = {
    "omniglot_characters": int(len(omni_data["images"])),
    "omniglot_alphabets": int(archives.alphabet.nunique()),
    "omniglot_drawings": int(omniglot["drawings"]),
    **{f"{name}_classes": info["classes"] for name, info in copies.items()},
    **{f"{name}_images_per_class": info["per_class"] for name, info in copies.items()},
    "peak_memory_mib": {name: {what: round(m / 2 ** 20) for what, m in measured.items()}
                        for name, measured in MEMORY.items()},
}
report.save_metrics(metrics, f"reports/metrics/{STAGE}.json")
metrics
