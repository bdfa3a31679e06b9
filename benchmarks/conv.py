"""Where a convolution's time goes on this backend: the patch matrix, the product, its transpose.

Times the pieces of one convolution layer as :func:`jaxcl.models.conv2d` runs it on CPU
(``im2col`` patch matrix × kernel matrix by :func:`jaxcl.models._layers.matmul`), each in a
compiled loop of ``--steps`` calls (:func:`scanned`), for 1 and 5 vmapped seeds (each seed
its own input and kernel, as under the engine):

* ``im2col``: the patch matrix ``[B·H'·W', kh·kw·C]`` alone;
* ``product``: the matrix product alone (on a given patch matrix);
* ``conv``: the layer's forward pass (the two above);
* ``product_grads`` / ``conv_grads``: forward pass and both gradients (input and kernel);
* ``product_input_grad`` / ``input_grad``: the input gradient from the output's cotangent,
  as the product ``g·Kᵀ`` alone / as the layer computes it (that product, then the
  transpose of ``im2col``, "col2im", summing the patch matrix's cotangent back into the
  input);
* ``native`` / ``native_grads``: ``lax.conv_general_dilated`` and its gradients.

The default layer is the CLASSP CNN's second convolution (batch 32, 26×26×32 → 24×24×64,
3×3, VALID), the one family that the faster model paths left at 0.66 of its roofline probe
(``benchmarks/models.py``): the probe counts the product, not the patch matrix and its
transpose. ``python benchmarks/conv.py [--batch 32 --size 26 --channels 32,64] [--quick]``.

Measured on 2 otherwise idle CPU cores (AMD EPYC, jax 0.10.2; every other process
stopped), milliseconds per call, the defaults (``results/benchmarks/conv.md``)::

    piece (ms)            1 seed   5 seeds
    im2col                  4.77     20.78
    product                 3.66     18.89
    conv                    4.66     22.43
    product_grads          13.67     68.20
    conv_grads             16.22     77.91
    product_input_grad      3.69     20.86
    input_grad              4.43     27.20
    native                  8.73    142.12
    native_grads          619.32   4252.82

The patch matrix is not what keeps the CLASSP CNN below its probe: the layer's forward pass
costs 1.0 ms more than its bare product, and col2im adds 0.7 ms (1 seed) to the input
gradient's product; forward and both gradients run at 0.84 (1 seed) and 0.88 (5 seeds) of
the same three bare products. (``im2col`` alone, 4.8 ms, costs more than it adds inside the
layer, where the compiled program writes the patch matrix as 9 slices and a concatenation
feeding the product; the stand-alone loop carries the 21 MB patch matrix as its output,
which may add copies, so the layer's differences are the figures to read.) The native
convolution under ``vmap`` (a grouped convolution, each seed its own kernel) is 38-55× slower
with its gradients on XLA:CPU.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from benchmarks.models import timed
from jaxcl import report
from jaxcl.io import write_json
from jaxcl.models._layers import conv2d, im2col, matmul


def _squared_norm_grads(f):
    """``(x, k) -> (∂/∂x, ∂/∂k) of ½‖f(x, k)‖²``: forward and both gradients, cotangent f."""
    return jax.grad(lambda x, k: 0.5 * jnp.sum(f(x, k) ** 2), argnums=(0, 1))


def pieces(window: tuple[int, int]) -> dict:
    """``{name: (function of (first, kernel), its first argument)}``; the first argument is
    ``"x"`` (the layer's input), ``"columns"`` (its patch matrix) or ``"g"`` (the output's
    cotangent)."""
    kh, kw = window

    def product(columns, kernel):
        return matmul(columns.reshape(-1, columns.shape[-1]), kernel.reshape(-1, kernel.shape[-1]))

    def patches(x, kernel):
        return conv2d(x, kernel, patches=True)

    def native(x, kernel):
        return conv2d(x, kernel, patches=False)

    def input_grad(g, kernel):  # the patch path's input gradient: g·Kᵀ, then col2im
        b, h, w, _ = g.shape  # stride 1, no padding: input H = H' + kh − 1
        x = jnp.zeros((b, h + kh - 1, w + kw - 1, kernel.shape[2]), g.dtype)
        return jax.vjp(lambda x: patches(x, kernel), x)[1](g)[0]

    def product_input_grad(g, kernel):  # g·Kᵀ alone, the patch matrix's cotangent
        return matmul(g.reshape(-1, g.shape[-1]), kernel.reshape(-1, kernel.shape[-1]).T)

    return {
        "im2col": (lambda x, kernel: im2col(x, window), "x"),
        "product": (product, "columns"),
        "conv": (patches, "x"),
        "product_grads": (_squared_norm_grads(product), "columns"),
        "conv_grads": (_squared_norm_grads(patches), "x"),
        "product_input_grad": (product_input_grad, "g"),
        "input_grad": (input_grad, "g"),
        "native": (native, "x"),
        "native_grads": (_squared_norm_grads(native), "x"),
    }


def scanned(f, *, perturb: int, steps: int):
    """``steps`` calls of ``f`` (vmapped over the seed axis) in one compiled loop, as the
    engine runs a step: buffers are reused from call to call. The loop carries the output
    and one entry of it, by which argument ``perturb`` (a small one) moves (× 1e-30) in the
    next call, so that no call is hoisted out of the loop or dropped, and no output is copied
    (the output itself is not read by the next call)."""
    g = jax.vmap(f)

    def run(*args):
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(g, *args))

        def body(carry, _):
            moved = list(args)
            moved[perturb] = moved[perturb] + 1e-30 * carry[1]
            out = g(*moved)
            return (out, jax.tree.leaves(out)[0].ravel()[0]), None

        return jax.lax.scan(body, (zeros, jnp.float32(0)), None, length=steps)[0][0]

    return jax.jit(run)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=26, help="input height = width")
    parser.add_argument("--channels", default="32,64", help="input,output channels")
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--seeds", default="1,5", help="comma-separated vmapped seed counts")
    parser.add_argument("--steps", type=int, default=20, help="calls per timed loop")
    parser.add_argument("--repeats", type=int, default=3, help="timed loops (best is kept)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 steps, 1 repeat")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    c_in, c_out = (int(c) for c in args.channels.split(","))
    batch, size, steps, repeats = args.batch, args.size, args.steps, args.repeats
    if args.quick:
        batch, size, c_in, c_out, steps, repeats = 2, 6, 2, 3, 2, 1
    window = (args.kernel, args.kernel)
    out_size = size - args.kernel + 1
    rows = []
    for seeds in (int(s) for s in args.seeds.split(",")):
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(keys[0], (seeds, batch, size, size, c_in))
        kernel = jax.random.normal(keys[1], (seeds, *window, c_in, c_out))
        firsts = {
            "x": x,
            "columns": jax.vmap(lambda x: im2col(x, window))(x),
            "g": jax.random.normal(keys[2], (seeds, batch, out_size, out_size, c_out)),
        }
        for name, (f, first) in pieces(window).items():
            inputs = (firsts[first], kernel)
            perturb = 0 if name == "im2col" else 1  # the kernel, unless unused
            compiled = scanned(f, perturb=perturb, steps=steps).lower(*inputs).compile()
            ms = 1e3 * timed(compiled, inputs, repeats) / steps
            rows.append({"seeds": seeds, "piece": name, "ms_per_call": round(ms, 3)})
            print(rows[-1], flush=True)
    names = list(pieces(window))
    seed_counts = sorted({r["seeds"] for r in rows})
    ms = {(r["seeds"], r["piece"]): r["ms_per_call"] for r in rows}
    table = "| seeds | " + " | ".join(names) + " |\n|--:|" + "--:|" * len(names) + "\n"
    table += "".join(
        f"| {s} | " + " | ".join(f"{ms[s, n]:.2f}" for n in names) + " |\n" for s in seed_counts
    )
    print("\n" + table)
    payload = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "quick": args.quick,
        "layer": {"batch": batch, "size": size, "c_in": c_in, "c_out": c_out, "kernel": window},
        "steps": steps,
        "rows": rows,
        "table": table,
    }
    write_json(Path(args.out) / "conv.json", payload)
    report.write_table(Path(args.out), table, name="conv.md")
    return payload


if __name__ == "__main__":
    main()
