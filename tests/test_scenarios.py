"""Task streams: exact task membership, padding, heads, permutations, sequences and the
class groups of T tasks."""

import itertools
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
    first = scenarios.class_pairs(
        fake_dataset(n_train=200, n_test=100, num_classes=10), num_tasks=3
    )
    assert first.task_names == ("0/1", "0/2", "0/3")
    with pytest.raises(ValueError, match=re.escape("num_tasks must be in [1, 6], got 7")):
        scenarios.class_pairs(fake_dataset(), num_tasks=7)


def test_sequence_keeps_each_dataset_first_examples():
    a, b = fake_dataset(seed=0), fake_dataset(seed=1)
    sc = scenarios.sequence([("a", a), ("b", b)], max_train_per_task=5, max_test_per_task=2)
    np.testing.assert_array_equal(sc.train_count, [5, 5])
    rows_b = np.asarray(sc.train_idx[1, :5])
    np.testing.assert_array_equal(np.asarray(sc.train_x)[rows_b], b.train_x[:5])
    test_b = np.asarray(sc.test_idx[1, :2])
    np.testing.assert_array_equal(np.asarray(sc.test_y)[test_b], b.test_y[:2])


def test_pair_rounds_of_four_classes_by_hand():
    # Circle method, n = 4: round r pairs (r, 3) and (r + 1, r - 1) mod 3, relabelled by
    # round 0's order 0, 3, 1, 2 -> 0, 1, 2, 3.
    assert scenarios.pair_rounds(4, rounds=3) == [(0, 1), (2, 3), (0, 3), (1, 2), (0, 2), (1, 3)]
    assert scenarios.pair_rounds(6, rounds=2)[3:] == [(0, 4), (1, 2), (3, 5)]


@pytest.mark.parametrize("n", [2, 10, 16])
def test_pair_rounds_are_perfect_matchings_without_repeats(n):
    pairs = scenarios.pair_rounds(n, rounds=n - 1)
    assert pairs[: n // 2] == [(c, c + 1) for c in range(0, n, 2)]  # round 0 is Split-X
    assert sorted(pairs) == sorted(itertools.combinations(range(n), 2))  # every pair once
    for r in range(n - 1):
        assert sorted(c for p in pairs[r * n // 2 : (r + 1) * n // 2] for c in p) == [*range(n)]
    assert scenarios.pair_rounds(n, rounds=1) == pairs[: n // 2]  # rounds are a prefix


def test_class_groups_are_blocks_or_rounds_of_pairs():
    assert scenarios.class_groups(10, num_tasks=5) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert scenarios.class_groups(6, num_tasks=2) == [(0, 1, 2), (3, 4, 5)]
    assert scenarios.class_groups(100, num_tasks=20)[1] == (5, 6, 7, 8, 9)  # CIFAR-100
    assert scenarios.class_groups(4, num_tasks=1) == [(0, 1, 2, 3)]
    assert scenarios.class_groups(10, num_tasks=20) == scenarios.pair_rounds(10, rounds=4)
    assert scenarios.class_groups(4, num_tasks=6) == scenarios.pair_rounds(4, rounds=3)


def test_class_groups_and_pair_rounds_refuse_impossible_counts():
    with pytest.raises(ValueError, match=r"num_classes must be even \(.*\), got 5"):
        scenarios.pair_rounds(5, rounds=1)
    with pytest.raises(ValueError, match=r"rounds must be in \[1, 9\] for 10 classes, got 10"):
        scenarios.pair_rounds(10, rounds=10)
    with pytest.raises(ValueError, match="rounds must be a positive integer, got 0"):
        scenarios.pair_rounds(10, rounds=0)
    blocks = "num_tasks must be a divisor of num_classes = 10 leaving >= 2 classes per task"
    for num_tasks in (7, 50):  # no blocks, and not 1..9 whole rounds of 5 pairs
        with pytest.raises(
            ValueError, match=f"{blocks}, or a multiple of 5 up to 45 \\(pair rounds\\), got"
        ):
            scenarios.class_groups(10, num_tasks=num_tasks)
    with pytest.raises(ValueError, match=r"num_classes = 9 leaving >= 2 classes per task, got 9"):
        scenarios.class_groups(9, num_tasks=9)  # no pairs of an odd number of classes
    with pytest.raises(TypeError, match=r"num_tasks must be a positive integer, got 2\.0"):
        scenarios.class_groups(10, num_tasks=2.0)


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
    "sequence": lambda ds, **kw: scenarios.sequence([("a", ds), ("b", ds)], **kw),
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
