"""Task streams: exact task membership, padding, heads, permutations and sequences."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import data, losses, scenarios


def fake_dataset(n_train=40, n_test=20, dim=6, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return data.ArrayDataset(
        rng.normal(size=(n_train, dim)).astype(np.float32),
        (np.arange(n_train) % num_classes).astype(np.int32),
        rng.normal(size=(n_test, dim)).astype(np.float32),
        (np.arange(n_test) % num_classes).astype(np.int32),
        num_classes,
    )


def test_split_tasks_hold_exactly_their_classes():
    ds = fake_dataset(n_train=41)  # ragged: class 0 has one more example
    sc = scenarios.split(ds, classes_per_task=2)
    assert sc.num_tasks == 2 and sc.task_names == ("0/1", "2/3")
    np.testing.assert_array_equal(sc.train_count, [21, 20])
    for t, classes in enumerate([(0, 1), (2, 3)]):
        rows = np.asarray(sc.train_idx[t, : sc.train_count[t]])
        assert set(ds.train_y[rows]) == set(classes)
        assert len(set(rows)) == len(rows)  # no duplicates
    np.testing.assert_array_equal(sc.class_mask, [[1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(sc.logit_mask(1), [True] * 4)  # shared head


def test_task_head_masks_other_classes():
    sc = scenarios.split(fake_dataset(), classes_per_task=2, head="task")
    np.testing.assert_array_equal(sc.logit_mask(1), [False, False, True, True])
    masked = losses.mask_logits(jnp.array([9.0, 8.0, 1.0, 2.0]), sc.logit_mask(1))
    assert int(jnp.argmax(masked)) == 3


def test_class_pairs_is_all_45_pairs_in_order():
    sc = scenarios.class_pairs(fake_dataset(n_train=200, n_test=100, num_classes=10))
    assert sc.num_tasks == 45 and sc.task_names[:3] == ("0/1", "0/2", "0/3")
    assert sc.task_names[-1] == "8/9"


def test_permuted_applies_the_task_permutation_without_copying_data():
    ds = fake_dataset()
    sc = scenarios.permuted(ds, num_tasks=3, seed=1, identity_first=True)
    assert sc.train_x.shape == ds.train_x.shape  # one copy of the data for all tasks
    x = jnp.asarray(ds.train_x[:2])
    np.testing.assert_array_equal(sc.inputs(x, 0), x)
    perm = np.asarray(sc.input_perm[2])
    assert sorted(perm) == list(range(6)) and not np.array_equal(perm, np.arange(6))
    np.testing.assert_array_equal(sc.inputs(x, 2), ds.train_x[:2][:, perm])
    # Same permutations whatever else happens: they depend on `seed` only.
    again = scenarios.permuted(ds, num_tasks=3, seed=1, identity_first=True)
    np.testing.assert_array_equal(again.input_perm, sc.input_perm)


def test_test_inputs_are_every_task_s_test_rows_as_the_task_sees_them():
    ds = fake_dataset()
    split = scenarios.split(ds, classes_per_task=2, max_test_per_task=3)
    rows = [np.flatnonzero(np.isin(ds.test_y, c))[:3] for c in ((0, 1), (2, 3))]
    np.testing.assert_array_equal(split.test_inputs(), ds.test_x[np.concatenate(rows)])
    perm = scenarios.permuted(ds, num_tasks=2, seed=1, identity_first=True)
    want = [ds.test_x[:, np.asarray(p)] for p in perm.input_perm]
    np.testing.assert_array_equal(perm.test_inputs(), np.concatenate(want))


def test_max_test_per_task_subsamples_test_sets():
    sc = scenarios.permuted(fake_dataset(), num_tasks=2, max_test_per_task=7)
    np.testing.assert_array_equal(sc.test_count, [7, 7])


@pytest.mark.parametrize("label_offset,num_classes", [(False, 4), (True, 8)])
def test_sequence_of_datasets(label_offset, num_classes):
    a, b = fake_dataset(seed=0), fake_dataset(n_train=30, seed=1)
    sc = scenarios.sequence([("a", a), ("b", b)], label_offset=label_offset)
    assert sc.task_names == ("a", "b") and sc.num_classes == num_classes
    np.testing.assert_array_equal(sc.train_count, [40, 30])
    rows_b = np.asarray(sc.train_idx[1, :30])
    np.testing.assert_array_equal(np.asarray(sc.train_x)[rows_b], b.train_x)
    offset = 4 if label_offset else 0
    np.testing.assert_array_equal(np.asarray(sc.train_y)[rows_b], b.train_y + offset)


def test_bad_input_is_refused_clearly():
    ds = fake_dataset()
    with pytest.raises(ValueError, match="head must be one of 'shared', 'task', got 'multi'"):
        scenarios.split(ds, head="multi")
    with pytest.raises(ValueError, match="classes_per_task must be a divisor of num_classes = 4"):
        scenarios.split(ds, classes_per_task=3)
    with pytest.raises(ValueError, match=r"training examples, got none in task\(s\) \[1\]"):
        scenarios.from_class_groups(ds._replace(train_y=np.zeros(40, np.int32)), [(0,), (1,)])
    with pytest.raises(ValueError, match=r"a class group must be .* in \[0, 4\), got \(0, 7\)"):
        scenarios.from_class_groups(ds, [(0, 7)])
    with pytest.raises(ValueError, match=r"data.train_x must be flattened, \[N, D\], got \(40, 2"):
        scenarios.split(ds._replace(train_x=ds.train_x.reshape(40, 2, -1)))
    with pytest.raises(ValueError, match="num_tasks must be a positive integer, got 0"):
        scenarios.permuted(ds, num_tasks=0)
    with pytest.raises(TypeError, match=r"classes_per_task must be a positive integer, got 2\.0"):
        scenarios.split(ds, classes_per_task=2.0)


_BUILDERS = {
    "split": lambda ds, **kw: scenarios.split(ds, **kw),
    "class_pairs": lambda ds, **kw: scenarios.class_pairs(ds, **kw),
    "permuted": lambda ds, **kw: scenarios.permuted(ds, num_tasks=2, **kw),
    "from_class_groups": lambda ds, **kw: scenarios.from_class_groups(ds, [(0, 1), (2,)], **kw),
}


@pytest.mark.parametrize("builder", sorted(_BUILDERS))
@pytest.mark.parametrize("arg", ["max_train_per_task", "max_test_per_task"])
@pytest.mark.parametrize(
    ("value", "error"), [(-1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_subset_sizes_must_be_positive_ints(builder, arg, value, error):
    # -1 used to slice [:-1] and drop the last example of every task silently.
    with pytest.raises(error, match=re.escape(f"{arg} must be a positive integer, got {value!r}")):
        _BUILDERS[builder](fake_dataset(), **{arg: value})


@pytest.mark.parametrize("builder", sorted(_BUILDERS))
def test_subset_sizes_keep_exactly_that_many(builder):
    ds = fake_dataset()
    sc = _BUILDERS[builder](ds, max_train_per_task=3, max_test_per_task=np.int64(1))
    assert set(np.asarray(sc.train_count)) == {3} and set(np.asarray(sc.test_count)) == {1}


def test_scenarios_by_name():
    ds = fake_dataset(n_train=200, n_test=100, num_classes=10)
    assert scenarios.get_scenario("class_pairs", ds).num_tasks == 45
    assert scenarios.get_scenario("permuted", ds, num_tasks=3).num_tasks == 3
    both = [("a", ds), ("b", ds)]
    assert scenarios.get_scenario("sequence", both, label_offset=True).num_classes == 20
    valid = "'class_pairs', 'permuted', 'sequence', 'split'"
    with pytest.raises(ValueError, match=f"scenario must be one of {valid}, got 'rotated'"):
        scenarios.get_scenario("rotated", ds)
    with pytest.raises(TypeError, match="of scenario 'permuted' must include 'num_tasks', got"):
        scenarios.get_scenario("permuted", ds)
    with pytest.raises(TypeError, match=r"of scenario 'split' must be among .*, got 'tasks'"):
        scenarios.get_scenario("split", ds, tasks=5)
