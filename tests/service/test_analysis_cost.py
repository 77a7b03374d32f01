"""What the change analysis beside the link is said to have added to a patch."""

from __future__ import annotations

from daemon.service.patcher import _analysis_cost


def test_the_time_after_the_link_counts_from_rustcs_end_plus_the_link():
    # rustc done at t=10 s, a 30 ms link: done at 10.030; the analysis finished at 10.045
    cost = _analysis_cost({"link_from": 10.0, "done_at": 10.045, "cpu_ms": 41.0}, 30.0)
    assert cost["analysis_cpu_ms"] == 41.0
    assert abs(cost["analysis_after_link_ms"] - 15.0) < 1e-6


def test_an_analysis_done_before_the_link_added_nothing():
    cost = _analysis_cost({"link_from": 10.0, "done_at": 10.020, "cpu_ms": 18.0}, 30.0)
    assert cost["analysis_after_link_ms"] == 0.0


def test_no_analysis_no_figures():
    assert _analysis_cost({}, 30.0) == {}
