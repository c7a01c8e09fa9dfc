"""The checkpoint time a worker's stores share (``rules.service.checkpoints.Pacer``)."""

from __future__ import annotations

from rules.service.checkpoints import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_store_waits_its_cost_divided_by_the_budget() -> None:
    clock = Clock()
    pacer = Pacer(0.05, clock)
    assert pacer.may("a", last=90.0)
    pacer.spent("a", 0.1)  # a 100 ms checkpoint: none for the next 2 s
    clock.now += 1.9
    assert not pacer.may("a", last=100.0)
    clock.now += 0.1
    assert pacer.may("a", last=100.0)


def test_stores_share_the_budget_and_the_longest_waiting_goes_first() -> None:
    clock = Clock()
    pacer = Pacer(0.05, clock)
    pacer.spent("x", 0.1)  # a checkpoint just taken: each of these is due, and must wait
    turns = []
    last = {"a": 95.0, "b": 90.0, "c": 99.0}
    for _ in range(600):  # a minute, each store asking every 0.1 s
        clock.now += 0.1
        for store in "abc":
            if pacer.may(store, last[store]):
                pacer.spent(store, 0.1)
                last[store] = clock.now
                turns.append(store)
    # 5% of 60 s is 3 s of checkpoints: 30 of 100 ms, not 30 per store.
    assert 29 <= len(turns) <= 31
    assert turns[:3] == ["b", "a", "c"]  # the oldest checkpoint first
    assert {s: turns.count(s) for s in "abc"} == {"a": 10, "b": 10, "c": 10}


def test_a_store_that_left_holds_no_turn() -> None:
    clock = Clock()
    pacer = Pacer(0.05, clock)
    pacer.spent("x", 0.1)
    assert not pacer.may("gone", last=10.0)  # due, waiting its turn; then it moves away
    assert not pacer.may("here", last=50.0)
    clock.now += 2.0
    pacer.forget("gone")
    assert pacer.may("here", last=50.0)
