"""The stage ``train_seeds_omniglot`` runs ``notebooks/train_seeds.ipynb`` (which nbval runs on
MiniImageNet, its default) on Omniglot, at smoke size and in pipeline order: after
``train_omniglot`` and ``train_seeds``, before ``report_seeds``, which reads what it writes."""
import json

import papermill
import pytest

from metalearn import paths

#: smoke-sized Omniglot 20-way settings (the stage's own are in params.yaml)
OMNIGLOT = dict(stage="train_seeds_omniglot", dataset="omniglot", one_seed_stage="train_omniglot", seeds=[0, 1],
                split="maml", filters=16, runs=["maml-conv-20w1s", "anil-conv-20w1s"], snapshots=[], iterations=2,
                meta_batch_1shot=2, meta_batch_5shot=2, inner_lr=0.1, test_steps=5, train_queries=0, n_val_tasks=2, val_every=2,
                n_test_tasks=4, test_queries=5, checkpoint_every=100)


@pytest.mark.stage("train_seeds_omniglot")
def test_the_seeds_notebook_trains_and_tests_omniglot_as_its_stage_records_it(tmp_path):
    papermill.execute_notebook(str(paths.NOTEBOOKS / "train_seeds.ipynb"), str(tmp_path / "executed.ipynb"),
                               parameters=OMNIGLOT, cwd=str(paths.NOTEBOOKS), progress_bar=False)
    models = paths.input("data/models/train_seeds_omniglot")
    stage = json.loads((models / "stage.json").read_text())
    runs = [f"{run}-seed{seed}" for seed in (0, 1) for run in OMNIGLOT["runs"]]
    assert stage["dataset"] == "omniglot" and stage["runs"] == runs and stage["same_as"]["stage"] == "train_omniglot"
    assert stage["test"] == {"tasks": 4, "queries": 5, "seed": 0, "bn": "transductive"}
    shipped = json.loads((paths.ROOT / "data/models/train_seeds_omniglot/maml-conv-20w1s-seed0.json").read_text())
    for run in runs:
        record = json.loads((models / f"{run}.json").read_text())
        identity = record["identity"]
        assert identity["run"] == f"train_seeds_omniglot-{run}" and identity["split"] == "maml"
        assert identity["train_queries"] == 1 and identity["meta_batch"] == 2  # K queries per class (MAML's code)
        assert set(identity) == set(shipped["identity"]), "the shipped models' identities would not be found"
        scores = paths.input(f"data/scores/train_seeds_omniglot/{run}.csv").read_text().splitlines()
        assert len(scores) == 1 + 4  # a header and one row per test task
