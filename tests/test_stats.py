"""The intervals behind the findings: bootstrap of a mean on known distributions, ties, ratios."""

import numpy as np
import pytest

from attnbench.stats import Estimate, bootstrap_mean, bootstrap_ratio, order


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    hits, widths = 0, []
    for trial in range(300):
        x = rng.normal(10.0, 2.0, size=40)
        e = bootstrap_mean(x, resamples=2000, seed=trial)
        hits += e.low <= 10.0 <= e.high
        widths.append(e.high - e.low)
    assert 0.90 <= hits / 300 <= 0.99
    # width close to the normal-theory 2 x 1.96 sigma / sqrt(n) = 1.24
    assert np.median(widths) == pytest.approx(2 * 1.96 * 2.0 / np.sqrt(40), rel=0.15)


def test_mean_and_degenerate_cases():
    e = bootstrap_mean([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.n == 3 and 1.0 <= e.low < 2.0 < e.high <= 3.0
    one = bootstrap_mean([5.0, None, float("nan")])
    assert (one.mean, one.low, one.high, one.n) == (5.0, None, None, 1) and not one.has_interval
    assert bootstrap_mean([]).mean is None


def test_order_claims_a_leader_only_when_intervals_separate():
    fast = bootstrap_mean([10.0, 10.1, 9.9])
    near = bootstrap_mean([9.95, 10.05, 9.85])
    slow = bootstrap_mean([8.0, 8.1, 7.9])
    assert fast.separated_from(slow) and not fast.separated_from(near)
    leaders, rest = order({"a": fast, "b": near, "c": slow}, "max")
    assert leaders == ["a", "b"] and rest == ["c"]  # a tie within noise, then c
    leaders, rest = order({"a": fast, "c": slow}, "max")
    assert leaders == ["a"] and rest == ["c"]
    # one run each: no interval, nothing separates
    assert order({"a": Estimate(10.0, None, None, 1), "c": Estimate(8.0, None, None, 1)}, "max")[0] == ["a", "c"]


def test_ratio_of_two_runs():
    a, b = [2.0, 2.2, 1.8, 2.1], [1.0, 1.1, 0.9, 1.0]
    r = bootstrap_ratio(a, b)
    assert r.mean == pytest.approx(2.025, rel=1e-6) and r.low < 2.025 < r.high
    assert bootstrap_ratio([2.0], [1.0]).has_interval is False


def test_compare_two_runs_cli(tmp_path, capsys):
    import pandas as pd

    from attnbench import compare

    def runs(device, scale):
        return pd.DataFrame([{"run": "r", "device": device, "commit": "c", "variant": v, "seed": s, "status": "ok",
                              "metric": "tokens_per_s", "value": base * scale * (1 + 0.01 * s)}
                             for v, base in (("sdpa", 100.0), ("gqa", 110.0)) for s in (1, 2, 3)])
    (tmp_path / "a" / "report").mkdir(parents=True)
    runs("H100", 1.0).to_csv(tmp_path / "a" / "report" / "runs.csv", index=False)
    runs("H200", 1.2).to_csv(tmp_path / "b.csv", index=False)
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b.csv"), "--out", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "(H100)" in out and "(H200)" in out and "| sdpa | tokens_per_s |" in out
    table = pd.read_csv(tmp_path / "c.csv")
    row = table[table["variant"] == "gqa"].iloc[0]
    assert row["ratio_b_over_a"] == pytest.approx(1.2) and row["ratio_low"] <= 1.2 <= row["ratio_high"]
    assert compare.main([str(tmp_path / "nowhere"), str(tmp_path / "b.csv")]) == 2


def test_compare_reads_a_run_committed_as_documents(tmp_path, capsys):
    """The README's `python -m attnbench.compare reports/h100 results`: reports/h100 has no runs.csv,
    only its documents (runs/<stage>/<variant>/) and its preset; the report's own reading turns them
    into the same rows, so every H100 variant is compared with the other run's."""
    from pathlib import Path

    import pandas as pd

    from attnbench import compare

    h100 = Path(__file__).resolve().parents[1] / "reports" / "h100"
    rows = compare.runs_from_documents(h100)
    speed = rows[rows["metric"] == "tokens_per_s"]
    assert list(speed["variant"]) == ["baseline", "sdpa", "flash2", "gqa", "flex", "sliding_window", "linear",
                                      "lsh", "mla"]
    assert set(speed["device"]) == {"NVIDIA H100 80GB HBM3"} and speed["value"].gt(0).all()
    doubled = speed.assign(value=2 * speed["value"], device="other")
    doubled.to_csv(tmp_path / "b.csv", index=False)
    assert compare.main([str(h100), str(tmp_path / "b.csv"), "--out", str(tmp_path / "c.csv")]) == 0
    assert "(NVIDIA H100 80GB HBM3)" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "c.csv")
    assert len(table) == 9 and table["ratio_b_over_a"].eq(2.0).all()
