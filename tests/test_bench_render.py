"""benchmarks/bench_render.py: the table prints a row whose compiled render ran past its timeout; the
interleaved 1M runs summarise their ratios."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_render import ratio_summary, table_line  # noqa: E402

ROW = {"scene": "random", "count": 1_000_000, "width": 512, "height": 512}
MEASURED = {"count": 1_000_000, "pairs_per_pixel": 41.6, "seconds": 0.5, "cpu": 3.9, "peak_gb": 1.25}


def test_a_row_whose_compiled_render_timed_out_still_prints():
    line = table_line(ROW, None, {**MEASURED, "seconds": 2.0})
    assert line.split()[:4] == ["random", "—", "512x512", "—"] and line.endswith("—")
    measured = table_line(ROW, MEASURED, {**MEASURED, "seconds": 2.0})
    assert measured.split()[:5] == ["random", "1,000,000", "512x512", "42", "0.500"] and measured.endswith("4.0x")


def test_interleaved_ratios_are_summarised_by_median_quartiles_and_range():
    assert ratio_summary([5.0, 7.0, 6.0, 9.0, 4.0]) == \
        "median 6.00x (quartiles 5.00-7.00x, range 4.00-9.00x, 5 pairs)"
    assert ratio_summary([6.5]) == "median 6.50x (quartiles 6.50-6.50x, range 6.50-6.50x, 1 pairs)"
