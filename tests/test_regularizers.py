"""EWC / MAS / SI / L2: penalties, importance updates (hand-computed), engine composition."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import data, engine, learners, regularizers, scenarios, types

D, C = 5, 3


def linear_logits(params, x):
    return x @ params["w"] + params["b"][None, :]


def params_at(seed):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"w": jax.random.normal(k1, (D, C)), "b": jax.random.normal(k2, (C,))}


def boundary_batch(n, seed=0):
    kx, ky = jax.random.split(jax.random.PRNGKey(100 + seed))
    return types.Batch(
        x=jax.random.normal(kx, (n, D)),
        y=jax.random.randint(ky, (n,), 0, C),
        valid=jnp.ones((n,), bool),
        task=jnp.int32(0),
        logit_mask=jnp.ones((C,), bool),
        epoch=jnp.int32(0),
    )


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic():
    reg = regularizers.ewc(strength=3.0, beta=0.5, num_batches=2, batch_size=4)
    anchor = params_at(0)
    state = reg.end_task(anchor, reg.init(anchor), linear_logits, boundary_batch(8), None)
    assert float(reg.penalty(anchor, state)) == 0.0
    direction = params_at(1)
    moved = lambda t: jax.tree.map(lambda a, d: a + t * d, anchor, direction)  # noqa: E731
    p1 = float(reg.penalty(moved(1.0), state))
    assert p1 > 0
    for t in (0.5, 2.0, -3.0):
        np.testing.assert_allclose(float(reg.penalty(moved(t), state)), t * t * p1, rtol=1e-5)


def test_ewc_fisher_uses_the_authors_batch_accounting():
    beta, n_batches, size = 0.3, 3, 4
    reg = regularizers.ewc(strength=1.0, beta=beta, num_batches=n_batches, batch_size=size)
    params, b = params_at(2), boundary_batch(n_batches * size)
    state = reg.end_task(params, reg.init(params), linear_logits, b, None)
    # By hand: squared gradient of each batch's *summed* tempered NLL at predicted labels,
    # summed over batches, divided by (batches − 1) · size.
    want = jax.tree.map(jnp.zeros_like, params)
    for i in range(n_batches):
        xb = b.x[i * size : (i + 1) * size]

        def nll(p, xb=xb):
            z = linear_logits(p, xb)
            logp = jax.nn.log_softmax(beta * z)
            return -jnp.sum(logp[jnp.arange(size), jnp.argmax(z, -1)])

        want = jax.tree.map(lambda w, g: w + g**2, want, jax.grad(nll)(params))
    want = jax.tree.map(lambda w: w / ((n_batches - 1) * size), want)
    for got, ref in zip(jax.tree.leaves(state.importance), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_ewc_true_labels_option():
    reg = regularizers.ewc(strength=1.0, predicted_labels=False, num_batches=1, batch_size=6)
    params, b = params_at(3), boundary_batch(6)
    state = reg.end_task(params, reg.init(params), linear_logits, b, None)

    def nll(p):
        logp = jax.nn.log_softmax(linear_logits(p, b.x))
        return -jnp.sum(logp[jnp.arange(6), b.y])

    g = jax.grad(nll)(params)
    np.testing.assert_allclose(state.importance["w"], g["w"] ** 2 / 6, rtol=1e-5)


def test_merged_quadratics_equal_one_slot_per_task():
    reg = regularizers.ewc(strength=2.0, num_batches=2, batch_size=4)
    anchors = [params_at(s) for s in (4, 5, 6)]
    state = reg.init(anchors[0])
    slots = []
    for i, anchor in enumerate(anchors):
        before = state.importance
        state = reg.end_task(anchor, state, linear_logits, boundary_batch(8, seed=i), None)
        fisher = jax.tree.map(jnp.subtract, state.importance, before)
        slots.append(regularizers.QuadraticState(fisher, anchor, jnp.float32(0)))

    def separate(p):
        return 2.0 * sum(regularizers.quadratic_penalty(p, s) for s in slots)

    probe = params_at(7)
    np.testing.assert_allclose(reg.penalty(probe, state), separate(probe), rtol=1e-4)
    g_merged = jax.grad(reg.penalty)(probe, state)
    g_separate = jax.grad(separate)(probe)
    for a, b in zip(jax.tree.leaves(g_merged), jax.tree.leaves(g_separate), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mas_importance_by_hand_and_online_accumulation():
    reg = regularizers.mas(strength=0.5, num_batches=2, batch_size=3, divisor=7.0)
    params, b = params_at(8), boundary_batch(6)
    state = reg.end_task(params, reg.init(params), linear_logits, b, None)
    want = (
        sum(
            jnp.abs(
                jax.grad(lambda p, xb=b.x[i : i + 3]: jnp.mean(linear_logits(p, xb) ** 2))(params)[
                    "w"
                ]
            )
            for i in (0, 3)
        )
        / 7.0
    )
    np.testing.assert_allclose(state.importance["w"], want, rtol=1e-5)
    later = params_at(9)
    state2 = reg.end_task(later, state, linear_logits, b, None)
    assert jax.tree.all(
        jax.tree.map(
            lambda a: bool(jnp.all(a)),
            jax.tree.map(jnp.greater_equal, state2.importance, state.importance),
        )
    )
    np.testing.assert_array_equal(state2.anchor["w"], later["w"])


def test_si_path_integral_and_boundary_importance():
    beta, damping = 0.5, 0.1
    reg = regularizers.si(strength=1.0, beta=beta, damping=damping)
    start, b = params_at(10), boundary_batch(4)
    state = reg.init(start)
    new = jax.tree.map(lambda p: p + 0.1, start)
    state = reg.step(state, start, new, linear_logits, b)

    def nll(p):
        logp = jax.nn.log_softmax(beta * linear_logits(p, b.x))
        return -jnp.sum(logp[jnp.arange(4), b.y])

    g = jax.grad(nll)(start)
    np.testing.assert_allclose(state.path["w"], -g["w"] * 0.1, rtol=1e-5)
    state = reg.end_task(new, state, None, None, None)
    np.testing.assert_allclose(
        state.quadratic.importance["w"], -g["w"] * 0.1 / (0.1**2 + damping), rtol=1e-5
    )
    np.testing.assert_array_equal(state.path["w"], 0.0)
    np.testing.assert_array_equal(state.quadratic.anchor["w"], new["w"])


def test_l2_is_identity_importance_to_the_last_anchor():
    reg = regularizers.l2(strength=10.0)
    p = params_at(11)
    state = reg.end_task(p, reg.init(p), None, None, None)
    moved = jax.tree.map(lambda x: x + 1.0, p)
    assert float(reg.penalty(moved, state)) == pytest.approx(10.0 * (D * C + C))


def test_ewc_composes_with_supervised_inside_the_engine():
    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(x)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (np.arange(40) % 4).astype(np.int32)
    ds = data.ArrayDataset(x, y, x[:20], y[:20], 4)
    sc = scenarios.split(ds, classes_per_task=2)
    reg = regularizers.ewc(strength=1.0, num_batches=2, batch_size=8)
    learner = learners.supervised(Linear(), optax.sgd(0.1), input_dim=6, regularizer=reg)
    assert learner.boundary_examples == 16
    run = engine.make_run(sc, learner, batch_size=8)
    state, _ = run.init(engine.seed_keys([0, 1]))
    state, _ = run.run_chunk(state, 0)
    reg_state = state.learner.regularizer_state
    assert float(jnp.sum(reg_state.importance["Dense_0"]["kernel"])) > 0
    np.testing.assert_array_equal(
        reg_state.anchor["Dense_0"]["kernel"], state.learner.params["Dense_0"]["kernel"]
    )
    # Right after the boundary the penalty is zero; the loss of task 2 includes it.
    penalty = jax.vmap(reg.penalty)(state.learner.params, reg_state)
    np.testing.assert_allclose(penalty, 0.0, atol=1e-7)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: regularizers.ewc(strength=-1.0), "strength must be >= 0, got -1.0"),
        (lambda: regularizers.ewc(strength=1.0, beta=0.0), "beta must be > 0, got 0.0"),
        (lambda: regularizers.si(strength=1.0, beta=-2.0), "beta must be > 0"),
        (lambda: regularizers.si(strength=1.0, damping=-0.1), "damping must be >= 0"),
        (lambda: regularizers.mas(strength=-0.5), "strength must be >= 0"),
        (lambda: regularizers.l2(strength=-10.0), "strength must be >= 0"),
        (lambda: regularizers.l2(strength=float("inf")), "strength must be >= 0 and finite"),
        (
            lambda: regularizers.ewc(strength=1.0, num_batches=0),
            "num_batches must be a positive integer, got 0",
        ),
        (
            lambda: regularizers.get_regularizer("lwf"),
            "regularizer must be one of 'ewc', 'l2', 'mas', 'si', got 'lwf'",
        ),
    ],
)
def test_bad_input_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_get_regularizer_checks_hyperparameters():
    with pytest.raises(TypeError, match="of regularizer 'l2' must be among 'strength', got 'lam'"):
        regularizers.get_regularizer("l2", lam=1.0)
    with pytest.raises(TypeError, match="of regularizer 'si' must include 'strength', got 'beta'"):
        regularizers.get_regularizer("si", beta=0.5)
    with pytest.raises(TypeError, match="strength must be a real number >= 0, got '1'"):
        regularizers.get_regularizer("l2", strength="1")
