"""The plasticity experiment and its sweep: the verdicts, and the quick run."""

import json

import numpy as np
import pytest

from experiments import plasticity, plasticity_sweep
from jaxcl import cli


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


def test_the_sweep_says_where_the_paper_findings_hold():
    rng = np.random.default_rng(0)

    def row(name, loss):
        per_seed = loss + 0.001 * rng.normal(size=10)
        return {"method": name, "metrics": {"plasticity_loss": {"per_seed": per_seed.tolist()}}}

    cells = plasticity_sweep.sweep_cells("class_pairs")
    losses = {"class_pairs/sgd@0.01": 0.02}
    for name, (_, optimizer, _, values) in cells.items():
        if optimizer == "sam":
            losses[name] = 0.02 + values["rho"]  # more plasticity lost as ρ grows
        else:  # GNP below every other row only at r = 0.05
            losses[name] = 0.0 if values["gnp_r"] == 0.05 else 0.05
    text = plasticity_sweep.sweep_findings([row(name, loss) for name, loss in losses.items()])
    assert "| SAM ρ | 0.01 | 0.02 | 0.05 | 0.1 | 0.2 | 0.5 |" in text
    assert "| 0.05 | -2.0 ± 0.1* | -2.0 ± 0.1* | -2.0 ± 0.1* |" in text  # r = 0.05, by α
    assert "more plasticity loss than SGD: SAM ρ=0.01, SAM ρ=0.02" in text
    assert (
        "holds at: GNP r=0.05 α=0.2, GNP r=0.05 α=0.5, GNP r=0.05 α=0.8 (3 of 12 GNP cells; "
        "significantly below SGD's in 3 of them)"
    ) in text
    assert "Sweep, permuted" not in text  # no permuted rows


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
