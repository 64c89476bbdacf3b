"""Every benchmark's figures as one markdown table, and a bar chart of them.

    python bench/isolation.py --out results
    python bench/async_fixtures.py --out results
    python bench/suite_wall.py --out results
    python bench/summary.py results [--png results/per-test.png]

The table names the machine, the versions and the date; the README's figures are copied
from it. The chart (matplotlib, in the ``bench`` extra) shows each variant's per-test cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where the benchmarks wrote their figures (--out)")
    parser.add_argument("--png", help="the chart's file (default: FOLDER/per-test.png)")
    args = parser.parse_args()
    folder = Path(args.folder)
    results = report.load(folder)
    print(report.markdown(results), end="")
    png = Path(args.png) if args.png else folder / "per-test.png"
    if report.chart(results, png):
        print(f"\nchart: {png}")
    else:
        print('\nno chart: pip install -e ".[bench]" (matplotlib)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
