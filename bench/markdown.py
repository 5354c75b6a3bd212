"""The benchmark's Markdown: one document per run, and ``bench/RESULTS.md`` regenerated from the
latest full run with its hand-written notes (between the notes markers) carried over."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import LITELLM, UPSTREAM

NOTES_BEGIN = "<!-- notes:begin (kept when make bench regenerates this file) -->"
NOTES_END = "<!-- notes:end -->"
GATEWAYS = ("sqlite", "postgres")


def num(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cell_name(row: dict[str, Any]) -> tuple[str, str, str]:
    upstream = f"{row['upstream_ms']:g} ms"
    if row["stream"] and row["chunk_delay_ms"]:
        upstream += f" + {row['chunk_delay_ms']:g} ms/chunk"
    return upstream, "stream" if row["stream"] else "JSON", str(row["concurrency"])


def ratio_table(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    gateways = [n for n in GATEWAYS if n in names]
    header = ["upstream", "mode", "c"]
    for name in gateways:
        header += [
            f"{name}: req/s ÷ upstream",
            f"{name}: added p50 ms",
            f"{name}: added TTFB p50 ms",
        ]
        if LITELLM in names:
            header.append(f"{name}: req/s ÷ LiteLLM")
    if LITELLM in names:
        header += ["LiteLLM: req/s ÷ upstream", "LiteLLM: added p50 ms"]
    body = []
    for row in rows:
        line = list(cell_name(row))
        for name in [*gateways, LITELLM]:
            stats = row["targets"].get(name)
            if name == LITELLM and LITELLM not in names:
                continue
            if stats is None:
                line += ["-"] * (2 if name == LITELLM else 3 + (LITELLM in names))
                continue
            line += [
                num(stats.get("rps_vs_upstream"), 2),
                num(stats.get("added_p50_vs_upstream_ms"), 2),
            ]
            if name != LITELLM:
                line.append(
                    num(stats.get("added_ttfb_p50_vs_upstream_ms"), 2) if row["stream"] else ""
                )
                if LITELLM in names:
                    line.append(num(stats.get("rps_vs_litellm"), 2))
        body.append(line)
    return table(header, body)


def absolute_table(
    rows: Sequence[dict[str, Any]], names: Sequence[str], labels: dict[str, str]
) -> str:
    header = [
        "upstream",
        "mode",
        "c",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "TTFB p50",
        "TTFB p99",
        "CPU ms/req",
        "loop block ms",
        "errors",
        "peak RSS MB",
        "noise cores",
    ]
    body = []
    for row in rows:
        for name in names:
            stats = row["targets"].get(name)
            if stats is None:
                continue
            body.append(
                [
                    *cell_name(row),
                    labels.get(name, name),
                    num(stats["rps"], 0),
                    num(stats["p50_ms"], 2),
                    num(stats["p99_ms"], 2),
                    num(stats["ttfb_p50_ms"], 2) if row["stream"] else "",
                    num(stats["ttfb_p99_ms"], 2) if row["stream"] else "",
                    num(stats["cpu_ms_per_req"], 2) if name != UPSTREAM else "",
                    num(stats.get("loop_block_ms"), 1),
                    str(stats["errors"]),
                    num(stats["peak_rss_mb"], 0),
                    num(stats["noise_cores_max"], 2),
                ]
            )
    return table(header, body)


def verdict_table(verdicts: Sequence[dict[str, Any]]) -> str:
    mark = {True: "yes", False: "**no**", None: "-"}
    return table(
        ["gateway", "target", "measured", "met", "margin / note"],
        [
            [
                v["target"],
                v["goal"],
                num(v["measured"], 2),
                mark[v["met"]],
                "; ".join(x for x in (v["margin"], v.get("note", "")) if x),
            ]
            for v in verdicts
        ],
    )


def memory_table(memory: dict[str, Any], labels: dict[str, str]) -> str:
    body = []
    for name, entry in memory.items():
        idle, after = entry.get("idle", {}), entry.get("after", {})
        timeline = entry.get("timeline", [])
        body.append(
            [
                labels.get(name, name),
                str(idle.get("procs", "-")),
                num(idle.get("rss_mb"), 0),
                num(idle.get("pss_mb"), 0),
                num(timeline[0]["rss_mb"], 0) if timeline else "-",
                num(timeline[-1]["rss_mb"], 0) if timeline else "-",
                num(entry.get("growth_after_warmup_mb"), 1),
                num(after.get("rss_mb"), 0),
                num(after.get("worker_rss_mb"), 0),
                num(after.get("pss_mb"), 0),
                num(entry.get("soak_growth_mb"), 1),
                num(idle.get("idle_cpu_pct"), 2),
            ]
        )
    return table(
        [
            "target",
            "procs",
            "idle RSS MB",
            "idle PSS MB",
            "RSS after pass 1",
            "RSS after last pass",
            "growth MB",
            "RSS after run",
            "largest worker after run",
            "PSS after run",
            "soak growth MB",
            "idle CPU %",
        ],
        body,
    )


def open_streams_table(results: dict[str, Any], labels: dict[str, str]) -> str:
    body = []
    for name, r in results.items():
        ttfb = r.get("ttfb_ms") or {}
        total = r.get("latency_ms") or {}
        body.append(
            [
                labels.get(name, name),
                f"{r['requests_ok']}/{r['concurrency']}",
                str(r["requests_err"]),
                str(r.get("open_max", "-")),
                num(ttfb.get("p50"), 1),
                num(ttfb.get("p99"), 1),
                num(ttfb.get("max"), 1),
                num((total.get("max") or 0) / 1000, 1),
                num(r.get("peak_rss_mb"), 0),
                num(r.get("cpu_ms_per_req"), 1),
                num((r.get("cores") or {}).get("other"), 2),
            ]
        )
    return table(
        [
            "target",
            "completed",
            "errors",
            "open at once",
            "TTFB p50 ms",
            "TTFB p99 ms",
            "TTFB max ms",
            "longest s",
            "peak RSS MB",
            "CPU ms/stream",
            "noise cores",
        ],
        body,
    )


def profile_section(name: str, prof: dict[str, Any]) -> str:
    if "error" in prof:
        return f"**{name}**: {prof['error']}\n"
    raw = prof["raw_file"]
    if "/" not in raw:
        raw = f"bench/results/profiles/{raw}"
    out = [
        f"**{name}**: {prof['samples']} samples of the GIL holder at {prof['rate']} Hz "
        f"over {prof['seconds']:g} s, c={prof['concurrency']}"
        f"; CPU per request without the profiler: {num(prof['cpu_ms_per_req'], 2)} ms (at "
        f"{num(prof['calibration_rps'], 0)} req/s). Raw stacks: "
        f"`{raw}`.",
        "",
    ]
    out.append(
        table(
            ["thread", "share", "ms/req"],
            [[t["thread"], f"{t['share']:.1%}", num(t["ms_per_req"], 3)] for t in prof["threads"]],
        )
    )
    out += ["", "Request path from the /v1 view down (inclusive, ≥ 2 % of samples):", ""]
    out.append(
        table(
            ["step", "share", "ms/req"],
            [
                [
                    ("&nbsp;&nbsp;" * 2 * r["depth"]) + f"`{r['frame']}`",
                    f"{r['share']:.1%}",
                    num(r["ms_per_req"], 3),
                ]
                for r in prof["tree"]
            ],
        )
    )
    out += ["", "Self time by package (where the CPU is actually burnt):", ""]
    out.append(
        table(
            ["package", "share", "ms/req"],
            [
                [f"`{r['package']}`", f"{r['share']:.1%}", num(r["ms_per_req"], 3)]
                for r in prof["self_packages"]
            ],
        )
    )
    out += ["", "Hottest functions by self time:", ""]
    out.append(
        table(
            ["function", "share", "ms/req"],
            [
                [f"`{r['frame']}`", f"{r['share']:.1%}", num(r["ms_per_req"], 3)]
                for r in prof["self_functions"][:15]
            ],
        )
    )
    return "\n".join(out) + "\n"


def workers_section(data: dict[str, Any], labels: dict[str, str]) -> str:
    rows = data.get("worker_rows") or []
    if not rows:
        return "Not run (no second worker class).\n"
    names = [n for n in (UPSTREAM, "sqlite", "sqlite-alt") if n in data["targets"]]
    text = [absolute_table(rows, names, labels), ""]
    ratios = []
    for row in rows:
        for name in names[1:]:
            stats = row["targets"].get(name, {})
            ratios.append(
                [
                    *cell_name(row),
                    labels.get(name, name),
                    num(stats.get("rps_vs_upstream"), 2),
                    num(stats.get("added_ttfb_p50_vs_upstream_ms"), 2) if row["stream"] else "",
                    num(stats.get("cpu_ms_per_req"), 2),
                ]
            )
    text.append(
        table(
            [
                "upstream",
                "mode",
                "c",
                "gateway",
                "req/s ÷ upstream",
                "added TTFB p50 ms",
                "CPU ms/req",
            ],
            ratios,
        )
    )
    return "\n".join(text) + "\n"


def results_markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    labels = {name: t["label"] for name, t in data["targets"].items()}
    names = list(data["targets"])
    m = meta["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    s = meta["settings"]
    out = [
        f"Run of {meta['started']}, {meta['wall_s'] / 60:.1f} min: `{meta['command']}`",
        "",
        f"* Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, {m['kernel']};"
        " load generator, mock upstream and every gateway share it, over loopback.",
        f"* Versions: {versions}"
        + (f"; LiteLLM {meta['litellm_version']}" if meta.get("litellm_version") else ""),
        "* Targets: " + "; ".join(f"`{n}` = {labels[n]}" for n in names),
        f"* Matrix: {s['repeats']} pass(es) x upstream profiles "
        f"{', '.join(f'{a:g} ms' + (f' (+{b:g} ms/chunk)' if b else '') for a, b in s['profiles'])}"
        f" x {'/'.join('stream' if x else 'JSON' for x in s['modes'])} x c="
        f"{', '.join(map(str, s['concurrency']))}; {s['duration']:g} s per measurement after "
        f"{s['warmup']:g} s of warm-up; medians over passes; ratios paired within a pass.",
        "* Every gateway feature on: key auth, a rate limit (requests/minute) and a daily "
        "budget on the key (reserved and settled per request), request log (background "
        "writer), Prometheus metrics; cache off.",
    ]
    for name, why in data.get("skipped", {}).items():
        out.append(f"* Skipped `{name}`: {why}")
    for error in data.get("errors", []):
        out.append(f"* **Phase {error['phase']} failed**: {error['error'][-300:]}")
    if data.get("verdicts_issue18"):
        out += ["", "### Targets of issue 18", "", verdict_table(data["verdicts_issue18"])]
    out += [
        "",
        "### Targets of issue 8",
        "",
        verdict_table(data["verdicts"]),
        "",
        "### Ratios",
        "",
        ratio_table(data["rows"], names),
        "",
        "### Absolute numbers (this machine, this run)",
        "",
        absolute_table(data["rows"], names, labels),
        "",
        "### Memory (whole process tree)",
        "",
        memory_table(data["memory"], labels),
        "",
    ]
    if data["open_streams"]:
        out += [
            f"### Open streams: {s['open_streams']} concurrent streams of "
            f"{s['stream_seconds']:g} s, started over {s['open_ramp']:g} s",
            "",
            open_streams_table(data["open_streams"], labels),
            "",
        ]
    out += ["### gunicorn worker classes", "", workers_section(data, labels)]
    if data.get("soak"):
        out += [
            "### Soak",
            "",
            table(
                ["target", "t s", "req/s", "errors", "RSS MB", "PSS MB"],
                [
                    [
                        r["target"],
                        str(r["t"]),
                        num(r["rps"], 0),
                        str(r["errors"]),
                        num(r["rss_mb"], 0),
                        num(r["pss_mb"], 0),
                    ]
                    for r in data["soak"]
                ],
            ),
            "",
        ]
    if data.get("profiles"):
        out += ["### Profile of the hot path (py-spy)", ""]
        for name, prof in data["profiles"].items():
            out += [profile_section(name, prof), ""]
    return "\n".join(out).rstrip() + "\n"


def write_results_md(path: Path, document: str, json_name: str) -> None:
    """Rewrite ``path`` from ``document``, keeping the notes block of the previous version."""
    notes = ""
    if path.exists():
        found = re.search(
            re.escape(NOTES_BEGIN) + r"(.*?)" + re.escape(NOTES_END), path.read_text(), re.S
        )
        if found:
            notes = found.group(1).strip("\n")
    parts = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (see `bench/README.md`) from "
        f"`bench/results/{json_name}`; the notes below are written by hand and kept.",
        "",
        NOTES_BEGIN,
        notes,
        NOTES_END,
        "",
        "## Latest run",
        "",
        document,
    ]
    path.write_text("\n".join(parts))
