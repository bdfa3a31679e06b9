"""The CLASSP experiment: optimizer phases, and the quick run end to end on real data."""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import classp
from jaxcl import cli


def test_paper_mode_is_gated_sgd_on_task_1_then_thresholded_classp():
    config = dataclasses.replace(classp.METHODS["classp_paper"], thresholds=(0.0, 0.5))
    opt = classp.build_optimizer(config, steps_on_task1=2)
    params = jnp.zeros(2)
    state = opt.init(params)
    steps = []
    for g in ([1.0, 0.1], [1.0, 0.1], [1.0, 0.1]):
        u, state = opt.update(jnp.asarray(g), state, params)
        steps.append(np.asarray(u))
    np.testing.assert_allclose(steps[0], [-0.2, -0.02], rtol=1e-6)  # SGD: no gate on task 1
    np.testing.assert_allclose(steps[1], [-0.2, -0.02], rtol=1e-6)
    # Task 2: only g² > 0.5 passes; S = 3 (current gradient included), ε = 1e-5.
    np.testing.assert_allclose(steps[2], [-0.2 / (3 + 1e-5), 0.0], rtol=1e-5)


def test_every_method_builds_its_optimizer():
    for method, config in classp.METHODS.items():
        opt = classp.build_optimizer(config, steps_on_task1=3)
        state = opt.init({"w": jnp.ones(3)})
        u, _ = opt.update({"w": jnp.full(3, 0.5)}, state, {"w": jnp.ones(3)})
        assert np.all(np.isfinite(u["w"])) and np.all(np.asarray(u["w"]) < 0), method


@pytest.mark.needs_data("mnist", "fashion_mnist")
def test_quick_run_writes_the_contract_files(tmp_path):
    argv = ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", "classp_paper"]
    rows = cli.run_experiment(classp.EXPERIMENT, argv)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "classp" and [r["method"] for r in payload["rows"]] == [
        "classp_paper"
    ]
    got = payload["rows"][0]["metrics"]
    for name in (*classp.TEST_METRICS, *classp.AUTHORS_METRICS):
        assert len(got[name]["per_seed"]) == 2 and 0.0 <= got[name]["mean"] <= 1.0, name
    table = (tmp_path / "table.md").read_text()
    assert table.count("classp_paper") == 2 and "not run" in table
    assert (tmp_path / "accuracy_by_method.png").stat().st_size > 0
    assert rows[0]["diverged_seeds"] == {}
