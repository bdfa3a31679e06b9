"""The model-family benchmark: layer counting by hand, and a --quick smoke run (no timings)."""

import json
import math

import jax
import pytest

from benchmarks import models

# Forward layers (kind, m, k, n) of each family's --quick configuration, counted by hand.
QUICK_LAYERS = {
    # 784 → 64 (Top-K) → 10 at batch 128.
    "sdmlp_1k": [("dot", 128, 784, 64), ("dot", 128, 64, 10)],
    "sdmlp_10k": [("dot", 128, 784, 64), ("dot", 128, 64, 10)],
    # Batch 4: 3×3 VALID 28→26 (1→32), 26→24 (32→64), pool to 12×12×64 = 9216, fc 128, head.
    "classp_cnn": [
        ("dot", 4 * 26 * 26, 9, 32),
        ("dot", 4 * 24 * 24, 9 * 32, 64),
        ("dot", 4, 9216, 128),
        ("dot", 4, 128, 10),
    ],
    # Batch 16: 3×3 stride-2 convs 28→14 (1→4), 14→7 (4→8), dense 7·7·8 → 16, head.
    "dst_cnn": [
        ("dot", 16 * 14 * 14, 9, 4),
        ("dot", 16 * 7 * 7, 9 * 4, 8),
        ("dot", 16, 392, 16),
        ("dot", 16, 16, 10),
    ],
    # Batch 16, one block per stage, widths (4, 8): 7×7 stride-2 stem 32→16, stage 0 at
    # 16×16, stage 1 at 8×8 with a 1×1 shortcut, 100-way head; on CPU every convolution is a
    # patch matrix product.
    "resnet18": [
        ("dot", 16 * 16 * 16, 7 * 7 * 3, 4),
        ("dot", 16 * 16 * 16, 9 * 4, 4),
        ("dot", 16 * 16 * 16, 9 * 4, 4),
        ("dot", 16 * 8 * 8, 9 * 4, 8),
        ("dot", 16 * 8 * 8, 9 * 8, 8),
        ("dot", 16 * 8 * 8, 4, 8),
        ("dot", 16, 8, 100),
    ],
    # 784 → 64 → 10 at batch 64.
    "hard_ash_mlp": [("dot", 64, 784, 64), ("dot", 64, 64, 10)],
}


def test_every_family_is_counted():
    assert set(QUICK_LAYERS) == set(models.FAMILY_NAMES)


@pytest.mark.parametrize("family", models.FAMILIES, ids=models.FAMILY_NAMES)
def test_forward_layers_match_hand_count(family):
    setup = family.build(True, None)
    state = jax.eval_shape(setup.learner.init, jax.random.PRNGKey(0))
    layers = models.forward_layers(setup, state)
    assert [tuple(layer) for layer in layers] == QUICK_LAYERS[family.name]


def test_step_flops_skip_the_first_input_gradient():
    layers = [models.Layer("dot", 2, 3, 4), models.Layer("dot", 2, 4, 5)]
    # First layer: forward and weight gradient; second: also the input gradient.
    assert models.step_flops(layers) == 2 * (2 * 2 * 3 * 4) + 3 * (2 * 2 * 4 * 5)


def test_synthetic_data_never_stands_in_for_a_real_load():
    with pytest.raises(ValueError, match="data_dir must be"):
        models.synthetic_load("mnist", data_dir=None)


def test_quick_run_writes_a_table_with_positive_finite_fractions(tmp_path):
    families = ["hard_ash_mlp"]  # the cheapest to compile; the others are built above
    payload = models.main(
        ["--quick", "--seeds", "1,2", "--families", ",".join(families), "--out", str(tmp_path)]
    )
    rows = payload["rows"]
    assert [(r["family"], r["seeds"]) for r in rows] == [(f, s) for f in families for s in (1, 2)]
    fractions = ("fraction_of_matmul_rate", "probe_fraction_of_matmul_rate", "fraction_of_probe")
    for row in rows:
        for name in fractions:
            assert math.isfinite(row[name]) and row[name] > 0, (row["family"], name)
        # XLA's count adds element-wise work to the matmuls (per step, not per loop).
        assert row["compiled_gflop_per_step"] >= row["analytic_gflop_per_step"]
        assert row["probe_compiled_gflop_per_step"] >= row["analytic_gflop_per_step"]
    saved = json.loads((tmp_path / "models.json").read_text())
    assert saved["rows"] == rows and saved["flops_basis"].startswith("analytic")
    table = (tmp_path / "models.md").read_text().splitlines()
    assert table[0].startswith("| family | seeds |") and set(table[1]) <= set("|-: ")
    body = [line for line in table[2:] if line.startswith("| ")]
    assert [line.split(" | ")[0:2] for line in body] == [
        [f"| {r['family']}", str(r["seeds"])] for r in rows
    ]
    assert all(line.count("|") == table[0].count("|") for line in body)
