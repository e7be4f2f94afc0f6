"""The tip_health view: green share, breaks and time to green, from landings.verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from devswarm.store.store import Store


def at(second: float) -> str:
    return f"2026-12-01T10:00:{second:06.3f}Z"


def landing(store: Store, n: int, second: float, verified: str | None, agent: str = "w") -> None:
    store.add(
        "landing", landing_id=f"l{n}", run_id="r", task_key=f"t{n}", agent_id=agent,
        status="landed", old_tip=f"c{n - 1}", new_tip=f"c{n}", ended_at=at(second),
        verified=verified,
    )  # fmt: skip


def test_tip_health_counts_green_time_breaks_and_recoveries(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.add("run", run_id="r", started_at=at(0), ended_at=at(50))
        # green 10-20, red 20-30 (culprit, then a red landing on top), revert green 30-40,
        # a second break 40-45 repaired at 45 (green to the end at 50).
        landing(store, 1, 10, "green")
        landing(store, 2, 20, "reverted")
        landing(store, 3, 25, "red")
        landing(store, 4, 30, "green", agent="verifier/r")
        landing(store, 5, 40, "culprit")
        landing(store, 6, 45, "green")
        store.add("landing", landing_id="l0", run_id="r", status="conflict", ended_at=at(5))
        store.add("verification", verification_id="v1", run_id="r", flake=True, ended_at=at(12))
        cols, rows = store.query("SELECT * FROM tip_health")
    (row,) = [dict(zip(cols, r, strict=True)) for r in rows]
    assert row["landings"] == 5 and row["reverts"] == 1 and row["verified_landings"] == 6
    assert row["green_share"] == pytest.approx(25 / 40)  # green 10+10+5 of 40 s
    assert row["breaks"] == 2
    assert row["breaks_per_100_landings"] == pytest.approx(40.0)
    assert row["mean_seconds_to_green"] == pytest.approx((10 + 5) / 2)
    assert row["mean_landings_to_green"] == pytest.approx((2 + 1) / 2)
    assert row["breaks_still_red"] == 0 and row["flakes"] == 1


def test_tip_health_of_a_run_without_verifier_findings_has_no_share(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.add("run", run_id="r", started_at=at(0), ended_at=at(50))
        landing(store, 1, 10, None)
        cols, rows = store.query("SELECT * FROM tip_health")
    (row,) = [dict(zip(cols, r, strict=True)) for r in rows]
    assert row["green_share"] is None and row["breaks"] == 0 and row["landings"] == 1
    assert row["mean_seconds_to_green"] is None


def test_an_unjudged_landing_neither_makes_nor_hides_a_break(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        store.add("run", run_id="r", started_at=at(0), ended_at=at(40))
        landing(store, 1, 10, "culprit")
        landing(store, 2, 20, None)  # landed while the verifier looked elsewhere
        landing(store, 3, 25, "red")
        landing(store, 4, 30, "green")
        cols, rows = store.query("SELECT breaks, green_share FROM tip_health")
    assert rows == [(1, pytest.approx(10 / 25))]


def test_the_html_report_draws_the_tip_over_the_run(tmp_path: Path) -> None:
    from devswarm.report.data import load_report
    from devswarm.report.html import render_html

    with Store(tmp_path / "s.duckdb") as store:
        store.add("run", run_id="r", goal="g", branch="b", started_at=at(0), ended_at=at(50),
                  status="done", cycles=1)  # fmt: skip
        landing(store, 1, 10, "green")
        landing(store, 2, 20, "reverted")
        landing(store, 3, 30, "green", agent="verifier/r")
        landing(store, 4, 40, None)
        page = render_html(load_report(store, "r"))
    assert 'id="chart-tip"' in page
    assert page.count('fill="#b5534f"><title>red from 20.0 s') == 1
    assert "not checked from 40.0 s" in page
    assert "1 break(s), 1 revert(s), 0 flake(s)" in page
