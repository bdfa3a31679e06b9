"""The DST continual learner: isolation invariants on a small engine run, topology-step
invariants, the death-rate cosine over the engine's task steps, one compile for every
sparsity config, and refused hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import data, engine, learners, scenarios, sparse
from jaxcl.losses import masked_mean_cross_entropy
from jaxcl.models.cnn import CNN
from jaxcl.optim import masked_adam
from jaxcl.types import Batch

FREQ = 2
MOMENTUM_STEPS = 12  # steps per task of the momentum-growth tests


def blobs(n_per_class=24, num_classes=4, side=8):
    rng = np.random.default_rng(0)
    means = rng.normal(size=(num_classes, side * side)).astype(np.float32)

    def split(n):
        y = np.repeat(np.arange(num_classes), n).astype(np.int32)
        return means[y] + 0.5 * rng.normal(size=(len(y), side * side)).astype(np.float32), y

    (x, y), (xt, yt) = split(n_per_class), split(n_per_class // 2)
    return data.ArrayDataset(x, y, xt, yt, num_classes)


SCENARIO = scenarios.split(blobs(), classes_per_task=2, head="task")
MODEL = CNN(num_classes=4, image_shape=(8, 8, 1), channels=(4,), hidden=(8,))


def sparsity(density=0.5, init="erk", growth=("gradient", "momentum")):
    return learners.dst_config(
        MODEL, input_dim=64, num_tasks=2, density=density, init=init, growth=growth
    )


def make_learner(density=0.5, init="erk", growth=("gradient", "momentum"), **overrides):
    kwargs = dict(
        input_dim=64,
        task_classes=SCENARIO.class_mask,
        sparsity=sparsity(density, init, growth),
        update_frequency=FREQ,
    )
    return learners.dst(MODEL, masked_adam(1e-2), **{**kwargs, **overrides})


def copy(tree):
    return jax.tree.map(np.array, tree)


@pytest.fixture(scope="module")
def stream():
    """The engine run and the host copies of the state after init and after each task."""
    run = engine.make_run(SCENARIO, make_learner(), batch_size=8, chunk_size=1)
    state, _ = run.init(engine.seed_keys([0, 1]))
    states, correct = [copy(state)], []
    for task in range(SCENARIO.num_tasks):
        state, record = run.run_chunk(state, task)
        states.append(copy(state))
        correct.append(np.asarray(record.correct[:, 0]))
    return run, states, np.stack(correct, axis=1)  # correct: [S, T, T]


def _leaves(tree):
    return jax.tree.leaves(tree)


def test_earlier_tasks_weights_are_bit_identical_and_bwt_is_zero(stream):
    _, states, correct = stream
    after0, after1 = states[1].learner, states[2].learner
    changed = 0
    for m0, p0, p1, frozen in zip(
        *map(_leaves, (after0.mask, after0.params, after1.params, after1.frozen)), strict=True
    ):
        np.testing.assert_array_equal(frozen, m0)  # task 0's mask is frozen during task 1
        assert np.array_equal(p0[m0].view(np.uint32), p1[m0].view(np.uint32))
        changed += int((p0[~m0] != p1[~m0]).sum())
    assert changed > 0  # task 1 did train other weights
    np.testing.assert_array_equal(correct[:, 1, 0], correct[:, 0, 0])  # R[1, 0] == R[0, 0]
    assert (correct[:, 0, 0] > 0).all()


def test_per_layer_densities_stay_exact(stream):
    _, states, _ = stream
    counts = np.broadcast_to(sparsity().counts, (2, len(sparsity().counts)))  # [S, L]
    for s in states[1:]:
        for task in range(int(s.learner.task[0]) + 1):
            rows = [m[:, task] for m in _leaves(s.learner.task_masks)]
            np.testing.assert_array_equal(_counts(rows), counts)
        np.testing.assert_array_equal(_counts(_leaves(s.learner.mask)), counts)


def _counts(masks):
    """``[S, L]`` kept weights per seed and layer."""
    return np.stack([m.reshape(m.shape[0], -1).sum(1) for m in masks], 1)


def _topology_step(stream, task_steps):
    """Seed 0 at the first topology update of task 1, with moments set to one everywhere;
    the state before and after the update."""
    run, states, _ = stream
    learner = run.learner
    state = jax.tree.map(lambda x: jnp.asarray(x[0]), states[1].learner)  # seed 0, after task 0
    state = learner.begin_task(state, jnp.int32(1), jax.random.PRNGKey(3))
    state = state._replace(opt_state=jax.tree.map(jnp.ones_like, state.opt_state))
    batch = Batch(
        x=jnp.asarray(SCENARIO.train_x[:8]),
        y=jnp.asarray(SCENARIO.train_y[:8]),
        valid=jnp.ones(8, bool),
        task=jnp.int32(1),
        logit_mask=SCENARIO.class_mask[1],
        epoch=jnp.int32(1),
        index=jnp.int32(FREQ - 1),  # step FREQ: a topology update
        task_steps=jnp.int32(task_steps),
    )
    return state, jax.jit(learner.update)(state, batch, jax.random.PRNGKey(4))[0]


def test_topology_step_regrows_what_it_prunes_at_zero_with_reset_moments(stream):
    run = stream[0]
    # Moments set to one everywhere: a regrown weight must not inherit them.
    state, new = _topology_step(stream, task_steps=run.spec.batches_per_epoch)
    adam = new.opt_state[0]
    entered_any = False
    for old_m, new_m, frozen, p_old, p_new, mu, nu, n in zip(
        *map(_leaves, (state.mask, new.mask, state.frozen, state.params, new.params)),
        *map(_leaves, (adam.mu, adam.nu, adam.count)),
        strict=True,
    ):
        left, entered = old_m & ~new_m, new_m & ~old_m
        assert int(left.sum()) == int(entered.sum())  # regrown count == pruned count
        assert int(new_m.sum()) == int(old_m.sum())
        free = entered & ~frozen
        entered_any |= bool(free.any())
        assert (p_new[free] == 0).all() and (p_new[left & ~frozen] == 0).all()
        assert (mu[entered] == 0).all() and (nu[entered] == 0).all() and (n[entered] == 0).all()
        assert (mu[frozen & ~entered] == 1).all()  # frozen moments never move
        np.testing.assert_array_equal(p_new[frozen], p_old[frozen])
    assert entered_any


def test_the_death_rate_anneals_over_the_batch_task_steps(stream):
    def regrown(task_steps):
        state, new = _topology_step(stream, task_steps)
        pairs = zip(_leaves(state.mask), _leaves(new.mask), strict=True)
        return sum(int((m & ~old).sum()) for old, m in pairs)

    # Step FREQ of a FREQ-step task ends the cosine (rate 0.005); of a long task, ≈ 0.5.
    at_end, at_start = regrown(FREQ), regrown(10_000)
    assert 0 < at_end < at_start / 10


@pytest.mark.parametrize("total", [30, 188, 1875])
def test_a_traced_total_gives_the_death_rate_of_a_constant_one(total):
    # The engine's Batch.task_steps is traced; the learner used to close over a constant.
    rate = sparse.cosine_death_rate
    steps = jnp.arange(0, 2 * total, 7, dtype=jnp.int32)
    traced = jax.jit(jax.vmap(rate, in_axes=(0, None)))(steps, jnp.int32(total))
    constant = jax.jit(jax.vmap(lambda s: rate(s, total)))(steps)
    np.testing.assert_array_equal(traced, constant)
    traced = jax.jit(rate)
    constant = jax.jit(lambda s: rate(s, total))
    for s in steps[:40]:
        assert traced(s, jnp.int32(total)) == constant(s)


def test_one_compile_serves_every_sparsity_setting_of_a_grid():
    cells = {
        "half": sparsity()._asdict(),
        "uniform-unfired": sparsity(0.2, "uniform", "unfired")._asdict(),
    }

    def build(hparams):
        config = learners.DSTConfig(**hparams)
        return make_learner(sparsity=config)

    run = engine.make_run(SCENARIO, build, grid=engine.grid(cells), batch_size=8)
    state, _ = run.init_rows(run.rows([0, 1]))  # rows: seed 0 of both cells, then seed 1
    for task in range(SCENARIO.num_tasks):
        state, _ = run.run_chunk(state, task)  # donates its input
    assert run.num_compiles == 1
    counts = np.stack([cells[name]["counts"] for name in ("half", "uniform-unfired")] * 2)
    np.testing.assert_array_equal(_counts(_leaves(state.learner.mask)), counts)


def test_dst_config_reads_the_models_shapes():
    config = sparsity(0.5, growth=("gradient", "momentum"))
    shapes = sparse.leaf_shapes(MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"])
    assert config.counts.shape == (len(shapes),) and config.growth.shape == (2,)
    assert sparsity(0.2).counts.sum() < config.counts.sum()
    adaptive = sparsity(0.5, growth=learners.adaptive_growth(2))
    np.testing.assert_array_equal(
        adaptive.growth, [sparse.GROWTH.index(g) for g in ("random", "gradient")]
    )
    with pytest.raises(ValueError, match=r"growth needs one name per task \(2\), got 3"):
        sparsity(0.5, growth=("random",) * 3)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(counts=np.zeros(2, np.int32)), ValueError, r"sparsity.counts must be of shape"),
        (dict(growth=np.zeros(3, np.int32)), ValueError, r"sparsity.growth must be of shape"),
        (dict(growth=np.asarray([0, 4])), ValueError, r"sparsity.growth must be in \[0, 3\]"),
        (dict(counts=None), ValueError, r"sparsity.counts must be in \[1, layer size\]"),
    ],
)
def test_a_bad_sparsity_setting_is_refused(change, error, match):
    config = sparsity()
    if change.get("counts", 0) is None:  # one more weight than the first layer has
        shapes = sparse.leaf_shapes(MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"])
        change = dict(counts=np.asarray(config.counts).copy())
        change["counts"][0] = np.prod(shapes[0]) + 1
    with pytest.raises(error, match=match):
        make_learner(sparsity=config._replace(**change))
    with pytest.raises(TypeError, match=r"sparsity must be a DSTConfig \(dst_config\), got 'dict'"):
        make_learner(sparsity=config._asdict())


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(density=0.0), r"density must be in \(0, 1\]"),
        (dict(density=1.01), r"density must be in \(0, 1\]"),
        (
            dict(density=1e-3, init="uniform"),
            r"density must be at least 0.0313 with init='uniform' to keep a weight in every "
            r"layer \(layer 0 \(shape \(3, 3, 1, 4\), 36 weights\) would get density 0.001",  # 1/32
        ),
        (dict(init="xavier"), "init must be one of"),
        (dict(growth="magic"), "growth must be one of"),
        (dict(update_frequency=0), "update_frequency must be a positive integer, got 0"),
        (dict(evaluation="class_il"), "evaluation must be one of"),
        (dict(death_rate=0.001), "final_death_rate <= death_rate"),
    ],
)
def test_bad_hyperparameters_are_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_learner(**overrides)


def test_a_non_integer_update_frequency_is_refused():
    with pytest.raises(TypeError, match=r"update_frequency must be a positive integer, got 2\.5"):
        make_learner(update_frequency=2.5)


def test_unknown_growth_is_refused():
    with pytest.raises(ValueError, match=r"growth must be one of 'gradient', 'momentum', 'rand"):
        learners.growth_schedule("magic", 3)
    with pytest.raises(ValueError, match="one name per task"):
        learners.growth_schedule(["random", "gradient"], 3)


def test_adaptive_growth_switches_halfway():
    assert learners.adaptive_growth(10) == ("random",) * 5 + ("gradient",) * 5
    assert learners.adaptive_growth(5, first="unfired", then="momentum", switch_at=1) == (
        ("unfired",) + ("momentum",) * 4
    )


def test_a_density_that_is_no_number_is_refused():
    with pytest.raises(TypeError, match=r"density must be a real number in \(0, 1\], got '0.5'"):
        make_learner(density="0.5")


def test_momentum_growth_needs_optimizer_moments():
    import optax

    with pytest.raises(ValueError, match="'mu' and 'nu'"):
        learners.dst(
            MODEL,
            optax.sgd(0.1),
            input_dim=64,
            task_classes=SCENARIO.class_mask,
            sparsity=sparsity(),
        )


def _batch(task, index, size=8):
    rows = np.asarray(SCENARIO.train_idx[task][: int(SCENARIO.train_count[task])])
    rows = rows[np.arange(index * size, (index + 1) * size) % len(rows)]
    return Batch(
        x=jnp.asarray(SCENARIO.train_x[rows]),
        y=jnp.asarray(SCENARIO.train_y[rows]),
        valid=jnp.ones(size, bool),
        task=jnp.int32(task),
        logit_mask=jnp.asarray(SCENARIO.class_mask[task]),
        epoch=jnp.int32(task),
        index=jnp.int32(index),
        task_steps=jnp.int32(MOMENTUM_STEPS),
    )


@pytest.fixture(scope="module")
def momentum():
    """A momentum-growth learner and its compiled update (batches of 12 steps per task)."""
    learner = make_learner(growth="momentum")
    return learner, jax.jit(learner.update)


def _train(update, state, task, steps):
    """``steps`` updates of ``task``; the number of weights that entered the mask at each."""
    changed = []
    for index in range(steps):
        old = state.mask
        state, _ = update(state, _batch(task, index), jax.random.PRNGKey(1000 + 100 * task + index))
        if (index + 1) % FREQ == 0:
            pairs = zip(_leaves(old), _leaves(state.mask), strict=True)
            changed.append(sum(int((new & ~o).sum()) for o, new in pairs))
    return state, changed


def test_momentum_growth_keeps_changing_the_mask(momentum):
    # With moments that only moved inside the mask, every candidate but the weights just
    # pruned scored 0: the first update regrew the pruned ones elsewhere, then none
    # changed. Main gave 36, 0, 0, 0, 0, 0 on task 0 and 35, 0, 0, 0, 0, 0 on task 1
    # (gradient growth: 81, 76, 27, 24, 6, 2); now 79, 80, 58, 29, 8, 2 and 80, 66, 27, ...
    learner, update = momentum
    state = learner.init(jax.random.PRNGKey(0))
    for task in range(2):  # task 1 has frozen weights
        state = learner.begin_task(state, task, jax.random.PRNGKey(1 + task))
        state, changed = _train(update, state, task, MOMENTUM_STEPS)
        assert len(changed) == 6
        assert all(c > 0 for c in changed[:5]), (task, changed)
        assert changed[1] > changed[0] / 2, (task, changed)  # the death rate decays slowly


def test_moments_move_at_every_free_position_and_trained_weights_as_masked_adam(momentum):
    learner, update = momentum
    state = learner.begin_task(learner.init(jax.random.PRNGKey(0)), 0, jax.random.PRNGKey(1))
    state, _ = _train(update, state, 0, 3)
    state = learner.begin_task(state, 1, jax.random.PRNGKey(2))
    state, _ = _train(update, state, 1, 3)
    batch = _batch(1, 2)  # step 3: no topology update
    new, _ = update(state, batch, jax.random.PRNGKey(5))

    def loss(weights):
        logits = MODEL.apply({"params": weights}, batch.x)
        own = batch._replace(logit_mask=batch.logit_mask & SCENARIO.class_mask[1])
        return masked_mean_cross_entropy(logits, own)

    grads = jax.grad(loss)(sparse.apply_masks(state.params, state.mask))
    active = jax.tree.map(lambda m, f: m & ~f, state.mask, state.frozen)
    # Reference: masked Adam restricted to the trained weights A = M ∧ ¬F.
    opt = masked_adam(1e-2)
    trained = jax.tree.map(lambda g, a: jnp.where(a, g, 0.0), grads, active)
    ref_updates, ref_state = opt.update(trained, state.opt_state, state.params, mask=active)
    new_adam, ref_adam, old_adam = new.opt_state[0], ref_state[0], state.opt_state[0]
    leaves = zip(
        *map(_leaves, (state.params, new.params, ref_updates, active, state.frozen, grads)),
        *map(_leaves, (old_adam.mu, new_adam.mu, ref_adam.mu, new_adam.nu, ref_adam.nu)),
        strict=True,
    )
    moved_outside = 0
    for p, p_new, u, a, f, g, mu, mu_new, mu_ref, nu_new, nu_ref in leaves:
        np.testing.assert_allclose(p_new, np.where(a, p + u, p), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(mu_new[a], mu_ref[a], rtol=1e-6)
        np.testing.assert_allclose(nu_new[a], nu_ref[a], rtol=1e-6)
        outside = ~a & ~f  # free weights outside the mask: a dense EMA of the gradient
        np.testing.assert_allclose(mu_new[outside], 0.9 * mu[outside] + 0.1 * g[outside], rtol=1e-5)
        np.testing.assert_array_equal(mu_new[f], mu[f])  # frozen: never moves
        moved_outside += int((mu_new[outside] != 0).sum())
    assert moved_outside > 0


def test_a_state_whose_masks_do_not_fit_the_parameters_is_refused():
    learner = make_learner()
    state = learner.begin_task(learner.init(jax.random.PRNGKey(0)), 0, jax.random.PRNGKey(1))
    # A hand-made frozen set that broadcasts (one flag per output unit) was used silently.
    frozen = jax.tree.map(lambda f: f[(0,) * (f.ndim - 1)], state.frozen)
    bad = state._replace(frozen=frozen)
    with pytest.raises(ValueError, match=r"state.frozen\['\w+'\]\['kernel'\] must be of"):
        learner.update(bad, _batch(0, 0), jax.random.PRNGKey(2))
    with pytest.raises(ValueError, match=r"state.frozen\['\w+'\]\['kernel'\] must be of"):
        learner.begin_task(bad, 1, jax.random.PRNGKey(2))
