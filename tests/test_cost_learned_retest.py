"""The measurement floor beside the learned model's scores: a second collection of the
same models scored as if it were a predictor (``learned_eval.retest_scores``)."""

# ruff: noqa: F811 (the shared fixtures of learned_support are parameters here)

from __future__ import annotations

import dataclasses

import pytest
from learned_support import collected, encoder  # noqa: F401 (fixtures)

from optc.cost.learned_data import Labeled, reference_keys
from optc.cost.learned_eval import RETEST, Score, retest_scores, table


def test_a_collection_against_itself_has_no_floor(collected: dict[str, list[Labeled]]) -> None:
    scores = retest_scores(collected, collected, reference_keys(collected))
    assert {s.device for s in scores} == set(collected)
    for s in scores:
        assert (s.method, s.protocol) == (RETEST, "references")
        assert s.rho == pytest.approx(1.0) and s.mape == pytest.approx(0.0)


def test_the_floor_is_the_relative_disagreement_on_non_reference_models(
    collected: dict[str, list[Labeled]],
) -> None:
    refs = set(reference_keys(collected))
    # The second "session" measures every non-reference model 10 % slower, and the
    # reference models 3x slower: only the former may count.
    slower = {
        d: [
            dataclasses.replace(s, latency_s=s.latency_s * (3.0 if s.key in refs else 1.1))
            for s in samples
        ]
        for d, samples in collected.items()
    }
    scores = retest_scores(collected, slower, refs)
    for s in scores:
        assert s.mape == pytest.approx(0.1)
        count = sum(1 for x in collected[s.device] if x.key not in refs)
        assert s.detail == f"{count} models"


def test_a_device_the_retest_lacks_is_left_out(collected: dict[str, list[Labeled]]) -> None:
    device = sorted(collected)[0]
    rest = {d: s for d, s in collected.items() if d != device}
    scores = retest_scores(collected, rest, reference_keys(collected))
    assert device not in {s.device for s in scores}


def test_the_table_shows_the_floor_only_when_there_is_one() -> None:
    learned = Score("tvm-1t", "references", "learned", 0.95, 0.2)
    floor = Score("tvm-1t", "references", RETEST, 0.99, 0.03)
    assert RETEST not in table([learned])
    with_floor = table([learned, floor])
    assert f"{RETEST} rho / MAPE" in with_floor and "0.990 / 3.0%" in with_floor
