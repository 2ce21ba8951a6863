"""benchmarks/ranking_cost.py: the --lengths argument refuses what is not a list of positive integers."""

import argparse
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ranking_cost.py"
_spec = importlib.util.spec_from_file_location("ranking_cost", _PATH)
assert _spec is not None and _spec.loader is not None
ranking_cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ranking_cost)


def test_lengths_parse() -> None:
    assert ranking_cost.window_lengths("50,100, 200") == [50, 100, 200]
    assert ranking_cost.window_lengths("") == []


@pytest.mark.parametrize("text", ["50,abc", "1.5", "0", "50,-1"])
def test_bad_lengths_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        ranking_cost.window_lengths(text)
