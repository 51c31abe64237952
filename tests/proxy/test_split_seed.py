"""MESHTRACE_SPLIT_SEED: a route split's picks become one fixed sequence, whatever RNG the router hands it."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshtrace.proxy.split import SEED_ENV, WeightedChoice

VERSIONS = ["v1", "v2", "v3"]
WEIGHTS = [20, 40, 40]


def picks(rng: random.Random, count: int = 200) -> list[str]:
    choice = WeightedChoice(VERSIONS, WEIGHTS, rng)
    return [choice.pick() for _ in range(count)]


def test_seeded_splits_repeat_their_picks_whatever_rng_they_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEED_ENV, "3")
    first = picks(random.Random(1))
    assert picks(random.Random(2)) == first
    counts = Counter(first)
    assert abs(counts["v1"] / len(first) - 0.2) < 0.05  # still the weights' proportions
    monkeypatch.setenv(SEED_ENV, "4")
    assert picks(random.Random(1)) != first


def test_without_the_seed_the_router_rng_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEED_ENV, raising=False)
    assert picks(random.Random(1)) == picks(random.Random(1))
    assert picks(random.Random(1)) != picks(random.Random(2))


def test_differently_weighted_splits_of_one_seed_draw_differently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEED_ENV, "3")
    halves = WeightedChoice(["a", "b"], [50, 50], random.Random())
    thirds = WeightedChoice(["a", "b"], [50, 51], random.Random())
    assert [halves.pick() for _ in range(64)] != [thirds.pick() for _ in range(64)]


def test_the_demo_sets_the_variable_the_proxy_reads() -> None:
    from meshtrace.demo.mesh import SPLIT_SEED_ENV

    assert SPLIT_SEED_ENV == SEED_ENV
