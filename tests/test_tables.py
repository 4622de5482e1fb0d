"""rplb.tables' bookkeeping, without EAL: the spec rows handed to C and the
counter slot pools change one service at a time, and a change that fails
to publish is rolled back exactly."""

import random

import numpy as np
from hypothesis import given, settings, strategies as st

from rplb.tables import Journal, SlotPool, SpecRows

DTYPE = np.dtype([("key", "<u4"), ("value", "<u4")])


def check_rows(rows: SpecRows, model: dict) -> None:
    """rows holds exactly model's keys, each once, in a dense prefix."""
    assert rows.count == len(model) == len(rows.key_at) == len(rows.payload)
    assert set(rows.row_of) == set(model)
    for key, value in model.items():
        row = rows.row_of[key]
        assert row < rows.count and rows.key_at[row] == key
        assert tuple(rows.array[row]) == (key, value)
        assert rows.payload[row] == ("payload", key)


# Operations: ("put", keys, values) or ("remove_many"/"remove", how many).
operations = st.lists(st.one_of(
    st.tuples(st.just("put"), st.lists(st.integers(0, 40), min_size=1, max_size=6, unique=True),
              st.integers(0, 1000)),
    st.tuples(st.sampled_from(["remove_many", "remove"]), st.integers(1, 6), st.just(0))),
    min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(operations, st.booleans()), min_size=1, max_size=12),
       st.randoms(use_true_random=False))
def test_spec_rows_follow_a_model_and_roll_back(changes, rng):
    """Each change is a few operations in one journal, then kept or rolled
    back; the rows always match a plain dict."""
    rows = SpecRows(DTYPE, 64)
    model: dict = {}
    for ops, keep in changes:
        before = dict(model)
        journal = Journal()
        for kind, arg, value in ops:
            if kind == "put":
                values = [value + k for k in arg]
                array = np.array(list(zip(arg, values)), dtype=DTYPE)
                for key in arg:
                    rows.put([key], array[[arg.index(key)]], journal, payload=("payload", key))
                model.update(zip(arg, values))
            elif model:
                keys = rng.sample(sorted(model), min(arg, len(model)))
                if kind == "remove_many":
                    rows.remove_many(keys, journal)
                else:
                    for key in keys:
                        rows.remove(key, journal)
                for key in keys:
                    del model[key]
            check_rows(rows, model)
        if not keep:
            journal.rollback()
            model = before
            check_rows(rows, model)


def test_put_replaces_and_appends_in_one_call():
    rows = SpecRows(DTYPE, 8)
    journal = Journal()
    rows.put([1, 2], np.array([(1, 10), (2, 20)], dtype=DTYPE), journal)
    rows.put([2, 3, 1], np.array([(2, 21), (3, 30), (1, 11)], dtype=DTYPE), journal,
             payload="p")
    assert rows.view().tolist() == [(1, 11), (2, 21), (3, 30)]
    assert rows.payload == ["p", "p", "p"]
    journal.rollback()
    assert rows.count == 0 and rows.row_of == {}


def test_slot_pool_hands_out_the_longest_free_slot_and_rolls_back():
    pool = SlotPool(4, generations=3)
    journal = Journal()
    taken = [pool.take(journal) for _ in range(3)]
    assert taken == [0, 1, 2]
    pool.give_back(1, journal)
    assert list(pool.free) == [3, 1] and pool.generation[1] == 1
    assert pool.take(journal) == 3 and pool.take(journal) == 1
    journal.rollback()
    assert list(pool.free) == [0, 1, 2, 3] and pool.generation == [0, 0, 0, 0]
    # Generations wrap.
    for _ in range(3):
        pool.give_back(0, Journal())
    assert pool.generation[0] == 0
