"""The plasticity experiment: the 2-unit pair head, the verdicts, and the quick run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import plasticity
from jaxcl import cli, data, scenarios, types


def test_pair_head_trains_on_ranks_and_predicts_the_pairs_digits():
    ds = data.ArrayDataset(
        np.zeros((8, 3), np.float32),
        np.arange(8, dtype=np.int32) % 4,
        np.zeros((4, 3), np.float32),
        np.arange(4, dtype=np.int32),
        4,
    )
    sc = scenarios.from_class_groups(ds, [(0, 3), (1, 2)])
    inner = types.Learner(
        init=lambda key: None,
        update=lambda state, batch, key: ((batch.y, batch.logit_mask), jnp.float32(0)),
        predict=lambda state, x, task: jnp.tile(jnp.asarray([[0.0, 1.0]]), (x.shape[0], 1)),
    )
    learner = plasticity.pair_head(inner, sc)
    batch = types.Batch(
        x=jnp.zeros((4, 3)),
        y=jnp.asarray([0, 3, 3, 0]),
        valid=jnp.ones(4, bool),
        task=jnp.int32(0),
        logit_mask=jnp.ones(4, bool),
        epoch=jnp.int32(0),
    )
    (y, mask), _ = learner.update(None, batch, None)
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    np.testing.assert_array_equal(mask, [True, True])
    logits = learner.predict(None, jnp.zeros((2, 3)), jnp.int32(1))
    np.testing.assert_array_equal(np.argmax(logits, -1), [2, 2])  # unit 1 of task (1, 2)
    assert logits.shape == (2, 4) and float(logits[0, 0]) == float(jnp.finfo(jnp.float32).min)


def test_findings_follow_the_welch_intervals():
    rng = np.random.default_rng(0)

    def seeds(loss, last):
        noise = 0.001 * rng.normal(size=(2, 10))
        return {"plasticity_loss": loss + noise[0], "last": last + noise[1]}

    per_seed = {
        "permuted/sgd@0.01": seeds(0.02, 0.90),
        "permuted/sam@0.01": seeds(0.02, 0.90),
        "permuted/gnp@0.01": seeds(0.00, 0.95),  # a significant benefit
        "class_pairs/sgd@0.01": seeds(0.01, 0.95),
        "class_pairs/sam@0.01": seeds(0.10, 0.85),
        "class_pairs/gnp@0.01": seeds(0.00, 0.96),
    }
    rows = [
        {"method": name, "metrics": {k: {"per_seed": v.tolist()} for k, v in values.items()}}
        for name, values in per_seed.items()
    ]
    lines = plasticity.paper_findings(rows)
    assert "does NOT hold (gnp@0.01 helps)" in lines[0]
    assert "SAM loses significantly more plasticity than SGD: holds" in lines[1]
    assert "GNP keeps plasticity best" in lines[2] and lines[2].endswith(": holds.")


@pytest.mark.needs_data("mnist")
def test_quick_run_writes_the_contract_files(tmp_path):
    methods = "permuted/sgd@0.01,class_pairs/gnp@0.01"
    argv = ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", methods]
    rows = cli.run_experiment(plasticity.EXPERIMENT, argv)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "plasticity"
    assert [r["method"] for r in payload["rows"]] == methods.split(",")
    for row in payload["rows"]:
        assert np.asarray(row["new_task_acc"]).shape == (2, 4)  # seeds x tasks
        for name in plasticity.METRICS:
            assert len(row["metrics"][name]["per_seed"]) == 2
    assert rows[1]["metrics"]["first"]["mean"] > 0.5  # a 2-way task is learned at once
    assert "paper's findings" in (tmp_path / "table.md").read_text()
    for png in ("plasticity_permuted_lr0.01.png", "plasticity_class_pairs_lr0.01.png"):
        assert (tmp_path / png).stat().st_size > 0
