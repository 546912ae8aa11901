"""PNG charts for BENCHMARKS.md: `python charts.py RESULTS.json OUTDIR`.

Runs with the bench venv's Python (matplotlib is installed there). Prints the
path of every chart written, one a line.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {
    "casgi": "#2a7ab9",
    "uvicorn": "#7f7f7f",
    "granian": "#d9822b",
    "h2corn": "#c0504d",
    "hypercorn": "#8c6bb1",
    "nginx": "#3a9e5c",
}


def measured(scenario: dict) -> list:
    return [(name, row) for name, row in scenario["servers"].items() if row.get("median")]


def bar_chart(names, values, labels, title, xlabel, path) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4), dpi=100)
    bars = ax.barh(names, values, color=[COLOURS.get(n, "#999999") for n in names])
    ax.invert_yaxis()
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.bar_label(bars, labels=labels, padding=4, fontsize=9)
    ax.set_xlim(0, max(values) * 1.35 if values and max(values) > 0 else 1)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def wrk_chart(scenario: dict, quick: bool, outdir: str) -> str | None:
    rows = measured(scenario)
    if not rows:
        return None
    names = [name for name, _ in rows]
    rps = [row["median"]["rps"] for _, row in rows]
    labels = []
    for _, row in rows:
        cpu = row["median"].get("cpu_per_100k")
        labels.append(f"{row['median']['rps']:,.0f}" + (f"  ({cpu:.2f} CPU s/100k)" if cpu else ""))
    title = scenario["title"] + (" [smoke run]" if quick else "")
    path = os.path.join(outdir, f"{scenario['name']}.png")
    unit = "messages" if scenario.get("unit") == "msg" else "requests"
    bar_chart(names, rps, labels, title, f"{unit} per second (median)", path)
    return path


def idle_chart(scenario: dict, quick: bool, outdir: str) -> str | None:
    rows = [(n, r) for n, r in measured(scenario) if r["median"].get("kib_per_connection")]
    if not rows:
        return None
    names = [name for name, _ in rows]
    kib = [row["median"]["kib_per_connection"] for _, row in rows]
    title = scenario["title"] + (" [smoke run]" if quick else "")
    path = os.path.join(outdir, f"{scenario['name']}.png")
    bar_chart(names, kib, [f"{v:.2f} KiB" for v in kib], title,
              "resident memory per idle connection (KiB, lower is better)", path)
    return path


def _cpu_ratio(scenario: dict, peer: str):
    """Peer's server CPU per request divided by casgi's (above 1: casgi needs less)."""
    casgi = scenario["servers"]["casgi"]["median"].get("cpu_per_100k")
    other = ((scenario["servers"].get(peer) or {}).get("median") or {}).get("cpu_per_100k")
    return other / casgi if casgi and other else 0


def _grouped_bars(ax, scenarios, data, ylabel) -> None:
    peers = [p for p, values in data.items() if any(values)]
    width = 0.8 / max(len(peers), 1)
    for i, peer in enumerate(peers):
        xs = [x + (i - (len(peers) - 1) / 2) * width for x in range(len(scenarios))]
        bars = ax.bar(xs, data[peer], width, label=f"vs {peer}", color=COLOURS[peer])
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "" for v in data[peer]], fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(scenarios)), [s["name"] for s in scenarios], rotation=30,
                  ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def summary_chart(results: dict, outdir: str) -> str | None:
    """casgi relative to uvicorn, granian and (in the TLS scenarios) h2corn, one
    group per scenario: requests per second (same round) and server CPU time per
    request."""
    # Only where casgi was measured: a casgi that failed to start has ratios of None.
    scenarios = [s for s in results["scenarios"] if s["kind"] != "idle"
                 and s["servers"].get("casgi", {}).get("median")]
    peers = ("uvicorn", "granian", "h2corn")
    rps = {p: [s["servers"]["casgi"]["ratios"].get(p) or 0 for s in scenarios] for p in peers}
    cpu = {p: [_cpu_ratio(s, p) for s in scenarios] for p in peers}
    if not scenarios or not any(any(v) for v in rps.values()):
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(scenarios) + 2), 7),
                                      dpi=100)
    _grouped_bars(top, scenarios, rps, "casgi rate ÷ peer rate")
    _grouped_bars(bottom, scenarios, cpu, "peer CPU/request ÷ casgi's")
    fig.suptitle("casgi relative to its peers (above 1: casgi ahead)"
                 + (" [smoke run]" if results["quick"] else ""))
    fig.tight_layout()
    path = os.path.join(outdir, "summary.png")
    fig.savefig(path)
    plt.close(fig)
    return path


def main(results_path: str, outdir: str) -> None:
    with open(results_path) as f:
        results = json.load(f)
    os.makedirs(outdir, exist_ok=True)
    written = [summary_chart(results, outdir)]
    for scenario in results["scenarios"]:
        draw = idle_chart if scenario["kind"] == "idle" else wrk_chart
        written.append(draw(scenario, results["quick"], outdir))
    for path in written:
        if path:
            print(path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
