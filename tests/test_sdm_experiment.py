"""The SDM experiment: protocol scaling, and the quick run end to end on real MNIST."""

import json

import pytest

from experiments import sdm
from jaxcl import cli


def test_the_paper_protocol_is_recovered_at_500_epochs():
    config = sdm.config_for(
        sdm.METHODS["sdmlp_k1"],
        dataset="mnist",
        epochs_per_task=500,
        pixel_scale="raw",
        quick=False,
    )
    assert config.effective_learning_rate == pytest.approx(0.05)
    # The authors' T = 5M counted 12,665 training + 2,115 validation images per epoch.
    assert config.gaba_switch_count(12665) == pytest.approx(5e6 * 12665 / (12665 + 2115))
    topk = sdm.config_for(
        sdm.METHODS["topk"], dataset="mnist", epochs_per_task=500, pixel_scale="raw", quick=False
    )
    assert topk.transition_epochs == 200 and topk.hidden_bias and not topk.normalize
    short = sdm.config_for(
        sdm.METHODS["opt_adam"], dataset="mnist", epochs_per_task=10, pixel_scale="raw", quick=False
    )
    assert short.effective_learning_rate == 1e-3  # adaptive optimizers keep the paper's lr


@pytest.mark.parametrize(
    ("method", "dataset", "width", "inputs"),
    [
        ("fly_1k", "mnist", 1000, 64),  # Table 7 (used to run with 32 under this label)
        ("fly_10k", "mnist", 10000, 32),  # Table 7
        ("fly_1k", "fashion_mnist", 1000, 64),  # Table 8
        ("fly_10k", "fashion_mnist", 10000, 64),  # Table 8
        ("fly_1k_32inputs", "mnist", 1000, 32),  # the extra row keeps its own value
        ("fly_1k_32inputs", "fashion_mnist", 1000, 32),
    ],
)
def test_flymodel_rows_run_the_tables_inputs_per_cell(method, dataset, width, inputs):
    fly = sdm.config_for(
        sdm.METHODS[method], dataset=dataset, epochs_per_task=10, pixel_scale="raw", quick=False
    )
    assert (fly.model, fly.width, fly.n_response) == ("fly", width, inputs)
    quick = sdm.config_for(
        sdm.METHODS[method], dataset=dataset, epochs_per_task=10, pixel_scale="raw", quick=True
    )
    assert quick.n_response == inputs and quick.width == 64


def test_default_table_has_every_table_7_row_and_the_extra_fly_row():
    assert sdm.DEFAULT_TABLE[-1] == "sdmlp+ewc" and "fly_1k_32inputs" in sdm.DEFAULT_TABLE
    published = {name for name, (_, mnist, _) in sdm.TABLE.items() if mnist is not None}
    assert published - set(sdm.DEFAULT_TABLE) == {
        "sdmlp_10k",
        "sdmlp+ewc_10k",
        "ewc_10k",
        "mas_10k",
    }


@pytest.mark.needs_data("mnist")
def test_quick_run_writes_the_contract_files(tmp_path):
    rows = cli.run_experiment(
        sdm.EXPERIMENT,
        [
            "--quick",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
            "--no-checkpoint",
            "--methods",
            "sdmlp+ewc",
        ],
    )
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "sdm" and [r["method"] for r in payload["rows"]] == [
        "sdmlp+ewc"
    ]
    metrics = payload["rows"][0]["metrics"]
    for name in ("pooled_acc", "acc", "dead", "switched"):
        assert len(metrics[name]["per_seed"]) == 2 and 0.0 <= metrics[name]["mean"] <= 1.0
    assert rows[0]["diverged_seeds"] == {}
    table = (tmp_path / "table.md").read_text()
    assert "| sdmlp+ewc |" in table and "83.0" in table  # the paper's number beside ours
    assert (tmp_path / "accuracy_after_each_task.png").stat().st_size > 0


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: sdmlp_k1, sdmlp_k10"):
        cli.run_experiment(
            sdm.EXPERIMENT, ["--quick", "--out", str(tmp_path), "--methods", "sdmlp_k3"]
        )


def test_config_holds_the_resolved_optimizer_and_regularizer_hyperparameters():
    kwargs = dict(dataset="mnist", epochs_per_task=10, pixel_scale="raw", quick=True)
    rmsprop = sdm.config_for(sdm.METHODS["opt_rmsprop"], **kwargs)
    assert dict(rmsprop.optimizer_hparams) == sdm.OPTIMIZER_HPARAMS["rmsprop"]
    assert rmsprop.regularizer_hparams == ()
    ewc = sdm.config_for(sdm.METHODS["ewc"], **kwargs)
    assert dict(ewc.regularizer_hparams) == sdm.REGULARIZER_HPARAMS["ewc"]
