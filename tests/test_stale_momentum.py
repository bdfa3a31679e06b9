"""The stale-momentum toy: output files, the qualitative claim, fidelity to the notebook."""

import json

import numpy as np
import pytest

from experiments import stale_momentum as sm
from jaxcl import cli


def test_quick_run_writes_the_contract_files_and_shows_the_claim(tmp_path):
    rows = cli.run_experiment(sm.EXPERIMENT, ["--quick", "--seeds", "3", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "stale_momentum"
    assert [r["method"] for r in payload["rows"]] == list(sm.METHODS)
    assert (tmp_path / "stale_momentum.png").stat().st_size > 0
    assert "masked_adam" in (tmp_path / "table.md").read_text()
    assert all(sm.claims(rows).values()) and len(sm.claims(rows)) == 3

    metrics = {r["method"]: r["metrics"] for r in payload["rows"]}
    longest = sm.TABLE_SILENCES[-1]
    # Dense Adam: (1-β₁)/sqrt(1-β₂) ≈ 3.16 times its usual step once both moments decayed.
    assert metrics["adam"][f"inflation@s={longest}"]["mean"] == pytest.approx(
        0.1 / np.sqrt(0.001), rel=1e-2
    )
    # RMSprop: the denominator decays during the silence, so the step grows with it.
    rms = [metrics["rmsprop"][f"inflation@s={s}"]["mean"] for s in sm.TABLE_SILENCES]
    assert rms == sorted(rms) and rms[-1] > 1.5
    for s in sm.TABLE_SILENCES:
        assert metrics["masked_adam"][f"inflation@s={s}"]["mean"] == pytest.approx(1.0, abs=1e-5)
        assert metrics["masked_adam"][f"drift@s={s}"]["mean"] == 0.0
        assert metrics["sgd"][f"delta@s={s}"]["mean"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["sgd_momentum"][f"drift@s={longest}"]["mean"] == pytest.approx(3.42, rel=1e-3)


def test_methods_subset_and_unknown_names(tmp_path):
    rows = cli.run_experiment(
        sm.EXPERIMENT, ["--quick", "--out", str(tmp_path), "--methods", "masked_adam,adam"]
    )
    assert [r["method"] for r in rows] == ["adam", "masked_adam"]
    with pytest.raises(ValueError, match="valid names: sgd, sgd_momentum"):
        cli.run_experiment(sm.EXPERIMENT, ["--quick", "--out", str(tmp_path), "--methods", "lion"])


def _notebook(opt, injection, nsteps=100):
    """The notebook's ``opt_plot`` loop (StaleGradients.ipynb), re-derived in NumPy."""
    grads = np.zeros(nsteps)
    grads[[0, 1, injection]] = 0.2
    m = v = 0.0
    steps = []
    for g in grads:
        if opt == "sgdm":
            m = 0.9 * m + g
            steps.append(m)
        elif opt == "adam":
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g**2
            steps.append((m / 0.1) / (np.sqrt(v / 0.001) + 1e-8))
        else:
            v = 0.99 * v + 0.01 * g**2
            steps.append(g / (np.sqrt(v) + 1e-8))
    return np.array(steps)


@pytest.mark.parametrize(
    "ours, theirs", [("sgd_momentum", "sgdm"), ("adam_notebook", "adam"), ("rmsprop", "rmsprop")]
)
def test_transforms_reproduce_the_notebooks_update_rules(ours, theirs):
    silences = np.array([0, 5, 96], np.int32)  # injections at steps 2, 7 and 98
    steps = sm.simulate(sm.METHODS[ours](), silences, grad=0.2, warmup=2)
    for row, s in zip(steps, silences, strict=True):
        expected = _notebook(theirs, 2 + s)[: steps.shape[1]]
        np.testing.assert_allclose(row, expected, rtol=2e-5, atol=1e-7)
