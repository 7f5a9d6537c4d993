"""data.test_values: stimuli kept out of both training and validation (the checkpoint is chosen without them)."""

import pytest

from nforge_jax.train.loop import TrainError, held_out_test_timelines, split_for
from train_helpers import make_tiny_store, tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("split") / "store", n_stimuli=5, duration_s=20)


def _stimuli(store, names):
    return {store.meta(n)["stimulus"] for n in names}


def test_test_values_are_in_neither_training_nor_validation(store):
    cfg = tiny_config(store.path)
    cfg.data.test_values = ("s4",)
    train_tl, val_tl = split_for(cfg, store)
    test_tl = held_out_test_timelines(cfg, store)
    assert _stimuli(store, train_tl) == {"s0", "s1", "s2"}
    assert _stimuli(store, val_tl) == {"s3"}
    assert _stimuli(store, test_tl) == {"s4"} and len(test_tl) == 2
    assert not set(test_tl) & (set(train_tl) | set(val_tl))


def test_hashed_split_also_leaves_the_test_values_out(store):
    cfg = tiny_config(store.path)
    cfg.data.val_values = ()
    cfg.data.val_ratio = 0.3
    cfg.data.test_values = ("s0", "s1")
    train_tl, val_tl = split_for(cfg, store)
    assert not _stimuli(store, train_tl + val_tl) & {"s0", "s1"}
    assert _stimuli(store, train_tl + val_tl) == {"s2", "s3", "s4"}


@pytest.mark.parametrize("val, test, message", [
    (("s3",), ("s3",), "share ['s3']"),
    (("s3",), ("nope",), "match no timeline"),
    ((), ("s0", "s1", "s2", "s3", "s4"), "nothing to train on"),
])
def test_bad_test_values_are_refused(store, val, test, message):
    cfg = tiny_config(store.path)
    cfg.data.val_values = val
    cfg.data.test_values = test
    with pytest.raises(TrainError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_for(cfg, store)
