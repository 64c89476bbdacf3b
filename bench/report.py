"""One summary of the benchmarks: a markdown table with the machine and versions, and a chart.

    python bench/summary.py DIR

Each benchmark given ``--out DIR`` writes its figures there (``<benchmark>.json``); this module
turns any number of them into one markdown table (what the README's figures are copied from)
and one PNG bar chart of the per-test cost of each variant (``pip install -e ".[bench]"``
brings matplotlib).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

PACKAGES = (
    "pytest-pgsandbox",
    "pytest",
    "psycopg",
    "SQLAlchemy",
    "asyncpg",
    "pytest-asyncio",
    "anyio",
    "pytest-xdist",
    "pytest-postgresql",
)


def machine() -> dict[str, str]:
    """Where and when the figures were measured."""
    cpu = platform.processor() or platform.machine()
    with_model = Path("/proc/cpuinfo")
    if with_model.exists():
        for line in with_model.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        first = meminfo.read_text().splitlines()[0].split()
        memory = f", {int(first[1]) / 1024 / 1024:.0f} GB RAM"
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load {os.getloadavg()[0]:.1f} at the end"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu})"
        f"{memory}{load}",
        "python": platform.python_version(),
        "versions": ", ".join(versions),
    }


def save(out: str | None, name: str, title: str, server: str, rows: list[dict[str, Any]]) -> None:
    """Write one benchmark's figures to ``out/name.json`` (nothing without ``out``).

    ``rows``: {"variant", "read", "write", "unit"} each, milliseconds per test over the empty
    test unless ``unit`` says otherwise.
    """
    if not out:
        return
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "title": title, "server": server, **machine(), "rows": rows}
    (folder / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")


def load(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:+.2f}"
    return f"{value:.2f} {unit}"


def markdown(results: list[dict[str, Any]]) -> str:
    """One table for every benchmark's figures, under where and when they were measured."""
    if not results:
        return "(no figures)\n"
    first = results[0]
    lines = [
        f"Measured {first['date']} on {first['machine']}; Python {first['python']}; "
        f"{first['versions']}.",
        "",
        "Per test over an empty test of the same kind (ms) unless a unit is given; "
        "one run, figures interleaved within each benchmark.",
        "",
        "| benchmark | server | variant | read | write |",
        "|---|---|---|---:|---:|",
    ]
    for result in results:
        for row in result["rows"]:
            unit = row.get("unit", "ms")
            lines.append(
                f"| {result['title']} | {result['server']} | {row['variant']} | "
                f"{_cell(row.get('read'), unit)} | {_cell(row.get('write'), unit)} |"
            )
    return "\n".join(lines) + "\n"


def chart(results: list[dict[str, Any]], path: Path) -> bool:
    """A bar chart of every per-test figure (ms); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = [
        (r["title"], [row for row in r["rows"] if row.get("unit", "ms") == "ms"]) for r in results
    ]
    groups = [(title, rows) for title, rows in groups if rows]
    if not groups:
        return False
    height = sum(len(rows) for _, rows in groups) * 0.42 + 1.2 * len(groups)
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(9, max(3.0, height)),
        squeeze=False,
        gridspec_kw={"height_ratios": [len(rows) + 1 for _, rows in groups]},
    )
    for ax, (title, rows) in zip(axes[:, 0], groups, strict=True):
        names = [row["variant"] for row in rows]
        ys = range(len(rows))
        for offset, workload, colour in ((-0.2, "read", "#7aa6c2"), (0.2, "write", "#d9822b")):
            values = [max(0.0, row.get(workload) or 0.0) for row in rows]
            bars = ax.barh(
                [y + offset for y in ys], values, height=0.4, label=workload, color=colour
            )
            for bar, value in zip(bars, values, strict=True):
                ax.text(
                    bar.get_width(),
                    bar.get_y() + bar.get_height() / 2,
                    f" {value:.1f}",
                    va="center",
                    fontsize=7,
                )
        ax.set_yticks(list(ys), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("symlog", linthresh=1.0)
        top = max(max(row.get("read") or 0.0, row.get("write") or 0.0) for row in rows)
        ax.set_xlim(0, max(2.0, top) * 4)  # room for the labels and the legend
        ax.set_xlabel("ms per test over an empty test (log scale above 1 ms)", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    first = results[0]
    fig.suptitle(f"pytest-pgsandbox, {first['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
