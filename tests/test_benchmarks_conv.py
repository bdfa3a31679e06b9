"""The convolution breakdown benchmark: a --quick smoke run (no timings asserted)."""

import json

import jax
import numpy as np

from benchmarks import conv
from jaxcl.models._layers import conv2d, im2col


def test_quick_run_times_every_piece_for_each_seed_count(tmp_path):
    payload = conv.main(["--quick", "--seeds", "1,2", "--out", str(tmp_path)])
    pieces = list(conv.pieces((3, 3)))
    assert [(r["seeds"], r["piece"]) for r in payload["rows"]] == [
        (s, p) for s in (1, 2) for p in pieces
    ]
    assert all(r["ms_per_call"] > 0 for r in payload["rows"])
    assert json.loads((tmp_path / "conv.json").read_text())["rows"] == payload["rows"]
    assert (tmp_path / "conv.md").read_text().startswith("| seeds | im2col |")


def test_input_grad_pieces_are_the_convolution_input_gradient():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 4))
    g = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 3, 4))
    native = jax.vjp(lambda x: conv2d(x, k, patches=False), x)[1](g)[0]
    pieces = conv.pieces((3, 3))
    np.testing.assert_allclose(pieces["input_grad"][0](g, k), native, rtol=1e-5, atol=1e-5)
    # Before col2im: the patch matrix's cotangent, whose transpose-sum is the input gradient.
    columns_grad = pieces["product_input_grad"][0](g, k).reshape(2, 3, 3, 27)
    summed = jax.linear_transpose(lambda x: im2col(x, (3, 3)), x)(columns_grad)[0]
    np.testing.assert_allclose(summed, native, rtol=1e-5, atol=1e-5)
