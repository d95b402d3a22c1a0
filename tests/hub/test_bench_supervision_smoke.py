"""Smoke test of benchmarks/bench_supervision.py at a tiny size: the report's shape,
never its timings."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_supervision


def test_tiny_run_writes_the_documented_keys(tmp_path: Path) -> None:
    out = tmp_path / "sup.json"
    code = bench_supervision.main(
        ["--size", "S", "--subjects", "12", "--no-results", "--json", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert {"machine", "config", "sizes", "started_at"} <= set(report)
    assert report["machine"]["cpu"] and report["config"]["sizes"] == {"S": 12}
    size = report["sizes"]["S"]
    for key in ("engine_fixes_per_s", "naive_fixes_per_s", "naive_subject_fixes_per_s"):
        assert isinstance(size[key], float) and size[key] > 0
    assert size["e2e_p99_ms"] is None and size["e2e"].startswith("skipped")
    assert size["subjects"] == 12 and size["rules"] == 12 * 5 and size["zones"] == 12 * 3
    # Every fix went through the engine; the every-zone anchor saw 36 zones per fix.
    assert size["engine"]["fixes"] == size["fixes"] > 12 * 40
    assert size["naive"]["zones_per_fix"] == 36
    assert size["engine"]["ticks"] == 60
    assert not list(tmp_path.glob("supervision_*"))
