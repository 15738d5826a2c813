from __future__ import annotations

import numpy as np
import pytest

from ibmonitor import schedules
from ibmonitor.exceptions import InvalidParameterError
from ibmonitor.schedules import (
    at_epochs,
    every_n_epochs,
    log_spaced_epochs,
    make_schedule,
    open_log_schedule,
)


def _exact_log_epochs(total: int, n: int) -> list:
    """The log formula in exact integer arithmetic: floor(T ** (k / (n - 1))) - 1."""
    out = set()
    for k in range(n):
        if n == 1:
            out.add(1)
            continue
        # largest m with m ** (n - 1) <= total ** k
        lo, hi = 1, total
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if mid ** (n - 1) <= total**k:
                lo = mid
            else:
                hi = mid - 1
        out.add(lo)
    return sorted(e - 1 for e in out)


def test_every_n_epochs_picks_multiples():
    f = every_n_epochs(3)
    assert [e for e in range(10) if f(e)] == [0, 3, 6, 9]
    g = every_n_epochs(2, offset=1)
    assert [e for e in range(8) if g(e)] == [1, 3, 5, 7]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_every_n_epochs_rejects_bad_interval(bad):
    with pytest.raises(InvalidParameterError, match="'n' parameter of every_n_epochs"):
        every_n_epochs(bad)


def test_at_epochs_is_order_free():
    f = at_epochs([10, 0, 3, 3])
    assert [e for e in range(12) if f(e)] == [0, 3, 10]
    assert at_epochs(np.array([2, 5]))(5)


@pytest.mark.parametrize("bad", [[-1], [1.5], [], [True]])
def test_at_epochs_rejects_bad_epochs(bad):
    with pytest.raises(InvalidParameterError, match="at_epochs"):
        at_epochs(bad)


@pytest.mark.parametrize("total", [1, 2, 10, 100, 1000, 1024, 3000, 10000])
@pytest.mark.parametrize("n", [1, 2, 10, 30, 50, 100])
def test_log_spaced_epochs_matches_the_formula_in_exact_arithmetic(total, n):
    epochs = log_spaced_epochs(total, n)
    assert epochs == _exact_log_epochs(total, n)
    assert epochs == sorted(set(epochs))
    assert epochs[0] == 0
    assert len(epochs) <= n
    if n > 1:
        assert epochs[-1] == total - 1


@pytest.mark.parametrize("total", [16, 1024, 4096])
def test_log_spaced_epochs_equals_the_literal_formula_where_floats_are_exact(total):
    n = 13
    literal = np.unique(np.logspace(0, np.log2(total), n, base=2).astype(int)) - 1
    assert log_spaced_epochs(total, n) == literal.tolist()


def test_log_spaced_epochs_is_dense_early_and_sparse_late():
    epochs = np.array(log_spaced_epochs(1000, 50))
    gaps = np.diff(epochs)
    assert gaps[0] == 1
    assert gaps[-1] > 50


def test_log_spaced_epochs_rejects_bad_arguments():
    with pytest.raises(InvalidParameterError, match="total_epochs"):
        log_spaced_epochs(0)
    with pytest.raises(InvalidParameterError, match="'n' parameter"):
        log_spaced_epochs(10, 0)


def test_open_log_schedule_thins_out():
    f = open_log_schedule(4)
    chosen = [e for e in range(1000) if f(e)]
    assert chosen[:4] == [0, 1, 2, 3]
    assert chosen[-1] < 1000
    # about 4 points per doubling
    assert 30 <= len(chosen) <= 4 * 10  # 4 per doubling, fewer where they round alike


def test_make_schedule_log_with_total_epochs():
    s = make_schedule("log", total_epochs=1000)
    assert s.planned == log_spaced_epochs(1000, schedules.DEFAULT_LOG_POINTS)
    assert all(s(e) for e in s.planned)
    assert not s(2 * 1000)
    assert s.config["kind"] == "log"
    n = make_schedule("log:10", total_epochs=1000)
    assert n.planned == log_spaced_epochs(1000, 10)


def test_make_schedule_log_without_total_epochs_is_open_ended():
    s = make_schedule("log")
    assert s.planned is None
    assert s(0)
    assert s(1)


def test_make_schedule_other_specs():
    every = make_schedule(4, total_epochs=10)
    assert every.planned == [0, 4, 8]
    assert make_schedule(4).planned is None
    listed = make_schedule([5, 1], total_epochs=10)
    assert listed.planned == [1, 5]
    assert listed(5)
    assert not listed(2)
    everything = make_schedule("all", total_epochs=3)
    assert everything.planned == [0, 1, 2]

    def odd(epoch):
        return epoch % 2 == 1

    custom = make_schedule(odd, total_epochs=10)
    assert custom(3)
    assert not custom(2)
    assert custom.planned is None
    assert custom.config["name"] == "odd"


@pytest.mark.parametrize("bad", ["sometimes", "log:x", "log:0", 0, -3, 2.5, None])
def test_make_schedule_rejects_bad_specs(bad):
    with pytest.raises(InvalidParameterError, match="schedule"):
        make_schedule(bad)


def test_make_schedule_rejects_bad_total_epochs():
    with pytest.raises(InvalidParameterError, match="total_epochs"):
        make_schedule("log", total_epochs=0)
