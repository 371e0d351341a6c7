"""What survives a stage's re-execution (metalearn.store) and where outputs go (metalearn.paths):
records found only for the same identity, models and scores reused instead of recomputed,
notebooks run by hand writing to scratch, reproducible prepared files."""
import io
import json
import os
import zipfile
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from metalearn import datasets, fewshot, paths, store, training
from metalearn.datasets import EpisodeSampler


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A root with the last pipeline run's outputs (``root``) and this execution's staging folder."""
    monkeypatch.setattr(paths, "ROOT", tmp_path / "root")
    monkeypatch.setenv(paths.STAGING_ENV, str(tmp_path / "staging"))
    monkeypatch.delenv(store.FRESH_ENV, raising=False)
    return tmp_path


def publish(study):
    """What the stage runner does on success: the staged outputs become the root's."""
    os.replace(study / "staging", study / "root")


def test_a_record_is_found_only_for_its_identity_and_brings_its_files(study, monkeypatch):
    paths.output("data/x/a.bin").write_bytes(b"weights")
    saved = store.save("data/x/a.json", {"lr": 0.1, "steps": (1, 2)}, ["data/x/a.bin"], history=[1.5])
    assert saved["identity"] == {"lr": 0.1, "steps": [1, 2]} and saved["history"] == [1.5]
    publish(study)
    assert store.find("data/x/a.json", {"lr": 0.2, "steps": (1, 2)}) is None  # other settings: compute again
    assert not (study / "staging" / "data/x/a.bin").exists()
    found = store.find("data/x/a.json", {"steps": [1, 2], "lr": 0.1})  # same identity, any order and container
    assert found == saved
    assert (study / "staging/data/x/a.bin").read_bytes() == b"weights"  # now part of this execution's outputs
    assert json.loads((study / "staging/data/x/a.json").read_text()) == saved
    monkeypatch.setenv(store.FRESH_ENV, "1")
    (study / "staging/data/x/a.json").unlink()
    assert store.find("data/x/a.json", {"steps": [1, 2], "lr": 0.1}) is None  # METALEARN_FRESH ignores the root's


def test_a_record_whose_files_are_missing_or_unwritten_is_refused(study):
    with pytest.raises(FileNotFoundError, match="not written"):
        store.save("data/x/a.json", {}, ["data/x/a.bin"])
    paths.output("data/x/a.bin").write_bytes(b"w")
    store.save("data/x/a.json", {}, ["data/x/a.bin"])
    publish(study)
    (study / "root/data/x/a.bin").unlink()
    assert store.find("data/x/a.json", {}) is None
    (study / "root/data/x/b.json").write_text("{not json")
    assert store.find("data/x/b.json", {}) is None


def test_outputs_are_readable_by_everyone(study):
    with paths.atomic_write(paths.output("reports/a.txt")) as handle:
        handle.write("x")
    assert (study / "staging/reports/a.txt").stat().st_mode & 0o777 == 0o644


def test_the_root_is_found_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "copy" / "lib" / "metalearn").mkdir(parents=True)
    (tmp_path / "copy" / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "copy" / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "copy" / "notebooks")  # e.g. dvc exp run's copy, or JupyterLab in notebooks/
    assert paths.find_root() == tmp_path / "copy"
    monkeypatch.chdir(tmp_path)  # outside any study: the one the package came from
    assert paths.find_root() == paths.find_root(paths.ROOT)
    with pytest.raises(RuntimeError, match="cannot find the study's root"):
        paths.find_root(tmp_path)


def test_a_notebook_run_by_hand_writes_to_scratch_and_reads_scratch_first(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setattr(paths, "SCRATCH", tmp_path / "reports" / ".scratch")
    monkeypatch.delenv(paths.STAGING_ENV, raising=False)
    (tmp_path / "reports" / "s").mkdir(parents=True)
    (tmp_path / "reports" / "s" / "a.csv").write_text("committed")
    assert paths.input("reports/s/a.csv") == tmp_path / "reports/s/a.csv"
    paths.output("reports/s/a.csv").write_text("smoke")
    assert (tmp_path / "reports/s/a.csv").read_text() == "committed"  # never over the study's reports
    assert paths.input("reports/s/a.csv") == tmp_path / "reports/.scratch/reports/s/a.csv"


# --- trained models and test scores are reused, not recomputed -----------------------------

IMAGES = torch.randint(0, 256, (10, 8, 14, 14), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
SPEC = fewshot.Spec("maml", "conv", 3, 1)
SETTINGS = fewshot.Settings(iterations=3, meta_batch=2, inner_steps=1, inner_lr=0.4, test_steps=2, val_every=2)


def episodes(split, spec, shots, queries):
    return EpisodeSampler(IMAGES, torch.arange(10), spec.n_way, shots, queries, seed=0)


def train(settings=SETTINGS, work=None):
    trained, history = fewshot.train_runs([SPEC], "omniglot", 4, episodes, lambda spec: settings, 2, 2, 0, "s",
                                          {"data": "tiny"}, snapshots=[2], about={"hardware": "here"})
    return trained[SPEC], history


def test_a_trained_run_is_reused_bit_for_bit_by_a_later_execution(study, monkeypatch):
    monkeypatch.setattr(paths, "WORK", study / "work")
    first, history = train()
    publish(study)
    assert {p.name for p in (study / "root/data/models/s").iterdir()} == {"maml-conv-3w1s.pt", "maml-conv-3w1s@2.pt",
                                                                          "maml-conv-3w1s.json"}
    for file in (study / "work").iterdir():
        file.unlink()  # a fresh clone: no checkpoint, only the committed model

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(fewshot, "train", no_training)
    again, again_history = train()
    assert fewshot.same_weights(again.model, study / "root/data/models/s/maml-conv-3w1s.pt")
    assert again.record == first.record and again_history.equals(history)
    assert first.record["identity"]["numerics"] == training.NUMERICS and first.record["hardware"] == "here"
    assert (study / "staging/data/models/s/maml-conv-3w1s@2.pt").is_file()  # its kept weights come along
    with pytest.raises(AssertionError, match="trained again"):
        train(replace(SETTINGS, inner_lr=0.3))  # other settings: trains
    monkeypatch.setattr(training, "NUMERICS", training.NUMERICS + 1)
    with pytest.raises(AssertionError, match="trained again"):
        train()  # other numerics: trains


def test_a_seeds_stage_copies_the_run_another_stage_trained_with_the_same_identity(study, monkeypatch):
    """train_seeds_omniglot's seed 0 is train_omniglot's run: copied with its history, not retrained."""
    monkeypatch.setattr(paths, "WORK", study / "work")

    def train_in(stage, seed=0, settings=SETTINGS, snapshots=()):
        trained, history = fewshot.train_runs([SPEC], "omniglot", 4, episodes, lambda spec: settings, 2, 2, seed,
                                              stage, {"data": "tiny"}, snapshots=snapshots, suffix=f"-seed{seed}"
                                              if stage == "b" else "", about={"hardware": "there"}, same_run_in="a")
        return trained[SPEC], history

    original, history = train_in("a", settings=replace(SETTINGS, pretrain_iterations=600))  # a stage that pre-trains
    publish(study)
    monkeypatch.setattr(fewshot, "train", lambda *a, **k: pytest.fail("trained again"))
    copied, copied_history = train_in("b")
    assert fewshot.same_weights(copied.model, study / "root/data/models/a/maml-conv-3w1s.pt")
    assert copied_history.drop(columns="run").equals(history.drop(columns="run"))
    assert copied.record["copied_from"] == "a/maml-conv-3w1s" and copied.record["run"] == "maml-conv-3w1s-seed0"
    assert copied.record["identity"]["run"] == "b-maml-conv-3w1s-seed0" and copied.record["hardware"] == "there"
    assert (study / "staging/data/models/b/maml-conv-3w1s-seed0.pt").is_file()
    for other in (dict(seed=1), dict(settings=replace(SETTINGS, inner_lr=0.3)), dict(snapshots=[2])):
        with pytest.raises(pytest.fail.Exception, match="trained again"):
            train_in("b", **other)  # another seed, other settings, kept iterations: not the same run
    assert not (study / "staging/data/models/b/maml-conv-3w1s-seed1.json").exists()


def test_a_seeds_stage_copies_a_run_with_its_kept_weights(study, monkeypatch):
    """The campaign's seeds stage: seed 0 is the one-seed campaign's run, kept iterations and all."""
    monkeypatch.setattr(paths, "WORK", study / "work")

    def train_in(stage, snapshots):
        trained, _ = fewshot.train_runs([SPEC], "omniglot", 4, episodes, lambda spec: SETTINGS, 2, 2, 0, stage,
                                        {"data": "tiny"}, snapshots=snapshots, suffix="-seed0" if stage == "b" else "",
                                        same_run_in="a")
        return trained[SPEC]

    original = train_in("a", [1, 2])
    publish(study)
    monkeypatch.setattr(fewshot, "train", lambda *a, **k: pytest.fail("trained again"))
    copied = train_in("b", [1, 2])
    assert copied.record["snapshots"] == [1, 2] and copied.record["copied_from"] == "a/maml-conv-3w1s"
    for iteration in (1, 2):
        source = study / f"root/data/models/a/maml-conv-3w1s@{iteration}.pt"
        target = study / f"staging/data/models/b/maml-conv-3w1s-seed0@{iteration}.pt"
        assert target.read_bytes() == source.read_bytes()
    assert sorted(copied.record["files"]) == sorted(["data/models/b/maml-conv-3w1s-seed0.pt",
                                                     "data/models/b/maml-conv-3w1s-seed0@1.pt",
                                                     "data/models/b/maml-conv-3w1s-seed0@2.pt"])
    assert fewshot.same_weights(copied.model, study / "root/data/models/a/maml-conv-3w1s.pt")
    assert not fewshot.same_weights(original.model, study / "root/data/models/a/maml-conv-3w1s@1.pt")
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        train_in("b", [1])  # other kept iterations: another run


def test_settings_a_run_does_not_use_are_not_part_of_its_identity():
    def key(spec, **changed):
        return fewshot.run_identity(fewshot.Spec.parse(spec), replace(SETTINGS, **changed), 0, "s", {})[1]

    unused = dict(pretrain_iterations=600, pretrain_batch=64, checkpoint_every=7)
    assert key("maml-conv-3w1s") == key("maml-conv-3w1s", inner_batch=5, train_shots=3, meta_step=0.5, **unused)
    assert key("reptile-conv-3w1s") == key("reptile-conv-3w1s", train_queries=4, **unused)
    for spec, used in [("maml-conv-3w1s", dict(train_queries=4)), ("reptile-conv-3w1s", dict(meta_step=0.5)),
                       ("multiclass+head-conv-3w1s", dict(pretrain_iterations=600)),
                       ("multiclass+reptile-conv-3w1s", dict(pretrain_batch=64, inner_batch=5))]:
        assert key(spec) != key(spec, **used), (spec, used)


def test_test_scores_are_reused_for_the_same_weights_tasks_and_numerics(study, monkeypatch):
    monkeypatch.setattr(paths, "WORK", study / "work")
    run, _ = train()
    scores = fewshot.score_runs({SPEC: run}, episodes, 4, 2, 1, "s", {"data": "tiny"})[SPEC]
    assert list(scores.columns) == ["adapt@0", "adapt@1", "adapt@2", "nil"] and len(scores) == 4
    direct = fewshot.test_scores(SPEC, run.model, SETTINGS, fewshot.test_episodes(episodes, SPEC, 4, 2, 1))
    assert scores.equals(direct)  # read back from CSV exactly as computed (float32)
    publish(study)
    monkeypatch.setattr(fewshot, "test_scores", lambda *a, **k: pytest.fail("tested again"))
    assert fewshot.score_runs({SPEC: run}, episodes, 4, 2, 1, "s", {"data": "tiny"})[SPEC].equals(scores)
    with torch.no_grad():
        next(run.model.parameters())[0, 0, 0, 0] += 1.0
    with pytest.raises(pytest.fail.Exception, match="tested again"):  # other weights: tested again
        fewshot.score_runs({SPEC: run}, episodes, 4, 2, 1, "s", {"data": "tiny"})


def test_a_runs_final_weights_are_scored_per_validation_task_and_reused(study, monkeypatch):
    """The A-curves interval: the final weights on the fixed validation tasks, task by task; their mean
    is the history's last validation (same weights, same tasks), each task as validate scores it alone."""
    monkeypatch.setattr(paths, "WORK", study / "work")
    run, history = train()
    scores = pd.read_csv(study / "staging/data/scores/s/maml-conv-3w1s.val.csv")["accuracy"]
    assert len(scores) == 2 and scores.mean() == pytest.approx(100 * history.val_accuracy.iloc[-1], abs=1e-4)
    val = fewshot.validation_tasks(episodes, SPEC, 2, 2, 0)
    inner = fewshot.inner_loop(SPEC, dict(run.model.named_parameters()), SETTINGS.inner_steps, SETTINGS.inner_lr)
    for t in range(2):
        alone = val._replace(**{k: getattr(val, k)[t:t + 1] for k in ("xs", "ys", "xq", "yq")})
        alone_scored = fewshot.validate(SPEC, run.model, alone, SETTINGS, inner)["val_accuracy"]
        assert scores[t] == pytest.approx(100 * alone_scored)
    publish(study)
    monkeypatch.setattr(fewshot, "validation_scores", lambda *a, **k: pytest.fail("scored again"))
    train()  # the same weights and tasks: reused
    assert pd.read_csv(study / "staging/data/scores/s/maml-conv-3w1s.val.csv")["accuracy"].equals(scores)
    with pytest.raises(pytest.fail.Exception, match="scored again"):
        fewshot.score_validation(SPEC, run, episodes, 3, 2, 0, "s", "maml-conv-3w1s", {"data": "tiny", "device": "cpu"})


# --- prepared data: reproducible files, content fingerprints ------------------------------

def test_prepared_files_are_byte_for_byte_reproducible_and_load_like_numpys(tmp_path):
    arrays = {"images": np.arange(600, dtype=np.uint8).reshape(2, 3, 10, 10), "names": np.array(["a", "bc"])}
    datasets._save_npz(tmp_path / "a.npz", **arrays)
    datasets._save_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = datasets.load(tmp_path / "a.npz")
    assert loaded.keys() == arrays.keys() and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    with zipfile.ZipFile(tmp_path / "a.npz") as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}


def test_a_fingerprint_follows_the_content_not_the_file(tmp_path):
    arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "names": np.array(["a", "b"])}
    np.savez(tmp_path / "plain.npz", **arrays)
    datasets._save_npz(tmp_path / "packed.npz", **arrays)
    print_ = datasets.fingerprint(datasets.load(tmp_path / "plain.npz"))
    assert print_ == datasets.fingerprint(datasets.load(tmp_path / "packed.npz")) == datasets.fingerprint(arrays)
    changed = {**arrays, "images": arrays["images"].copy()}
    changed["images"][0, 0, 0] += 1
    assert datasets.fingerprint(changed) != print_
    assert datasets.fingerprint({**arrays, "images": arrays["images"].reshape(3, 2, 4)}) != print_
    assert datasets.fingerprint({"other": arrays["images"], "names": arrays["names"]}) != print_
