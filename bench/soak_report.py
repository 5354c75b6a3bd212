"""The soak's numbers and Markdown: the RSS slope after the warm-up, requests and errors by
kind, CPU per request, request-log rows against requests sent, errors in the gateway's log;
and ``bench/SOAK.md``'s results section, rewritten between its markers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .markdown import num, table

RESULTS_BEGIN = "<!-- results:begin (rewritten by python -m bench.soak runs of 10 min or more) -->"
RESULTS_END = "<!-- results:end -->"
#: Rows of the RSS table in the Markdown (the JSON keeps every sample).
TABLE_ROWS = 31


def slope_per_10min(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MB)`` points, in MB per 10 minutes (None under 3)."""
    if len(points) < 3:
        return None
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mean_t) * (y - mean_y) for t, y in points)
    return sxy / sxx * 600


def summarise(data: dict[str, Any], warmup_share: float, threshold: float) -> dict[str, Any]:
    """The verdicts and headline numbers of a run (``data`` as :class:`bench.soak.Soak`
    collects it)."""
    samples = data.get("samples") or []
    if len(samples) < 2:
        return {"passed": False, "reason": "fewer than two samples"}
    first, last = samples[0], samples[-1]
    duration = last["t_s"]
    warmup = warmup_share * duration
    steady = [s for s in samples if s["t_s"] >= warmup]
    slope = slope_per_10min([(s["t_s"], s["rss_mb"]) for s in steady])
    pss_slope = slope_per_10min([(s["t_s"], s["pss_mb"]) for s in steady])
    anon_slope = slope_per_10min([(s["t_s"], s["anon_mb"]) for s in steady])
    sent = last["ok"] + last["failed"]
    before, after = data.get("mock_before") or {}, data.get("mock_after") or {}
    upstream = after.get("total", 0) - before.get("total", 0)
    faults = {
        kind: count - (before.get("faults") or {}).get(kind, 0)
        for kind, count in (after.get("faults") or {}).items()
    }
    rows = data.get("log_rows")
    row_total = sum(r[-1] for r in rows) if rows is not None else None
    flat = slope is not None and slope < threshold
    rows_match = row_total == sent
    stable = all(s["pids"] == first["pids"] for s in samples)
    cpu = last["cpu_s"] - first["cpu_s"]
    alive = bool(data.get("gateway_alive"))
    server_log = data.get("gateway_log") or {}
    return {
        "duration_s": duration,
        "warmup_s": round(warmup, 1),
        "samples_in_slope": len(steady),
        "rss_idle_mb": first["rss_mb"],
        "rss_after_warmup_mb": steady[0]["rss_mb"] if steady else None,
        "rss_end_mb": last["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "rss_slope_mb_per_10min": None if slope is None else round(slope, 3),
        "pss_slope_mb_per_10min": None if pss_slope is None else round(pss_slope, 3),
        "anon_slope_mb_per_10min": None if anon_slope is None else round(anon_slope, 3),
        "threshold_mb_per_10min": threshold,
        "flat": flat,
        "sent": sent,
        "ok": last["ok"],
        "failed": last["failed"],
        "rps": round(sent / duration, 1) if duration else None,
        "cpu_ms_per_req": round(1000 * cpu / sent, 3) if sent else None,
        "upstream_calls": upstream,
        "upstream_calls_per_req": round(upstream / sent, 3) if sent else None,
        "faults_injected": faults,
        "log_rows": row_total,
        "rows_match": rows_match,
        "processes": len(first["pids"]),
        "processes_stable": stable,
        "gateway_alive": alive,
        "log_tracebacks": server_log.get("tracebacks"),
        "log_error_lines": server_log.get("error_lines"),
        "passed": flat and rows_match and stable and alive,
    }


def server_log_summary(path: Path) -> dict[str, Any]:
    """Tracebacks and error lines in the gateway's own log (gunicorn and the app), with the
    last few of them; the dashboard login token it prints at start is left out."""
    lines = path.read_text(errors="replace").splitlines()
    errors = [x for x in lines if "Traceback" in x or "[ERROR]" in x or "[CRITICAL]" in x]
    return {
        "tracebacks": sum("Traceback" in x for x in lines),
        "error_lines": len(errors),
        "last_errors": [x[:300] for x in errors[-5:] if "token" not in x.lower()],
    }


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def _thin(samples: Sequence[dict[str, Any]], rows: int) -> list[dict[str, Any]]:
    """At most ``rows`` samples, evenly spread, the first and the last included."""
    if len(samples) <= rows:
        return list(samples)
    step = (len(samples) - 1) / (rows - 1)
    return [samples[round(i * step)] for i in range(rows)]


def rss_table(samples: Sequence[dict[str, Any]], warmup_s: float) -> str:
    shown = _thin(samples, TABLE_ROWS)
    out = []
    previous = samples[0]
    for s in shown:
        span = s["t_s"] - previous["t_s"]
        done = s["ok"] + s["failed"] - previous["ok"] - previous["failed"]
        when = " (warm-up)" if s["t_s"] < warmup_s else " (end)" if s is samples[-1] else ""
        out.append(
            [
                f"{s['t_s'] / 60:.2f}{when}",
                num(s["rss_mb"]),
                num(s["anon_mb"]),
                num(s["file_mb"]),
                num(s["pss_mb"]),
                str(len(s["pids"])),
                f"{s['ok'] + s['failed']:,}",
                num(done / span if span > 0 else None),
                f"{s['failed'] - previous['failed']:,}",
            ]
        )
        previous = s
    header = [
        "minute",
        "RSS MB",
        "anon MB",
        "file MB",
        "PSS MB",
        "procs",
        "requests",
        "req/s",
        "failed",
    ]
    return table(header, out)


def lanes_table(lanes: dict[str, Any]) -> str:
    rows = []
    for name, lane in lanes.items():
        latency = lane.get("latency_ms") or {}
        rows.append(
            [
                name,
                str(lane["clients"]),
                f"{lane['ok'] + lane['failed']:,}",
                f"{lane['ok']:,}",
                f"{lane['failed']:,}",
                num(latency.get("p50")),
                num(latency.get("p99")),
            ]
        )
    header = ["traffic", "clients", "sent", "ok", "failed", "ok p50 ms", "ok p99 ms"]
    return table(header, rows)


def errors_table(lanes: dict[str, Any]) -> str:
    rows = [
        [name, f"`{kind}`", f"{count:,}"]
        for name, lane in lanes.items()
        for kind, count in sorted(lane.get("error_codes", {}).items(), key=lambda kv: -kv[1])
    ]
    if not rows:
        return "No failed requests."
    return table(["traffic", "kind (status and error code the answer named)", "requests"], rows)


def rows_table(rows: Sequence[Sequence[Any]]) -> str:
    ordered = sorted(rows, key=lambda r: (str(r[0]), bool(r[1]), int(r[2]), str(r[3] or "")))
    body = [
        [str(route), "stream" if stream else "json", str(status), f"`{error or '-'}`", f"{n:,}"]
        for route, stream, status, error, n in ordered
    ]
    return table(["route", "mode", "status", "error type", "rows"], body)


def report_markdown(data: dict[str, Any]) -> str:
    s, meta = data["summary"], data["meta"]
    settings = meta["settings"]
    m = meta["machine"]
    v = meta["versions"]
    if "sent" not in s:
        return f"# Soak run {meta['started']}\n\nNo result: {s.get('reason')}.\n"
    faults = ", ".join(f"{k} {n:,}" for k, n in s["faults_injected"].items()) or "none"
    parts = [
        f"# Soak run {meta['started']}",
        "",
        f"`{meta['command']}`: {settings['minutes']:g} min on "
        f"{'PostgreSQL + Redis' if settings['backend'] == 'postgres' else 'SQLite'}, "
        f"{sum(lane['clients'] for lane in data['lanes'].values())} closed-loop clients "
        f"({settings['mix_text']}), {settings['fault_rate']:.0%} upstream faults "
        f"({settings['faults']}; slow ones answer after {2 * settings['deadline']:g} s, the "
        f"gateway's deadline is {settings['deadline']:g} s), upstream first byte after "
        f"{settings['latency_ms']:g} ms and {settings['chunks']} streamed chunks "
        f"{settings['chunk_delay_ms']:g} ms apart. Machine: {m['cpus']} CPUs "
        f"({m['cpu_model']}), {m['memory_gib']} GiB, load average at the end "
        f"{m['loadavg'][0]:.2f}; Python {v.get('python')}, gunicorn {v.get('gunicorn')}, "
        f"gevent {v.get('gevent')}.",
        "",
        "## Verdict",
        "",
        table(
            ["check", "result", "passed"],
            [
                [
                    "RSS slope after the warm-up (least squares, "
                    f"{s['samples_in_slope']} samples from minute {s['warmup_s'] / 60:.1f})",
                    f"{num(s['rss_slope_mb_per_10min'], 2)} MB per 10 min "
                    f"(< {s['threshold_mb_per_10min']:g})",
                    _yes(s["flat"]),
                ],
                [
                    "request-log rows = requests sent (nothing dropped)",
                    f"{'-' if s['log_rows'] is None else format(s['log_rows'], ',')} rows, "
                    f"{s['sent']:,} requests",
                    _yes(s["rows_match"]),
                ],
                [
                    "gateway processes unchanged (no worker died or was replaced)",
                    f"{s['processes']} processes",
                    _yes(s["processes_stable"]),
                ],
                ["gateway still serving at the end", "", _yes(s["gateway_alive"])],
                [
                    "gateway log: tracebacks and error lines (not a check)",
                    f"{s['log_tracebacks']} / {s['log_error_lines']}",
                    "",
                ],
            ],
        ),
        "",
        "## Memory",
        "",
        f"RSS of the gateway's whole process tree (gunicorn master and workers): "
        f"{num(s['rss_idle_mb'])} MB idle before the load, {num(s['rss_after_warmup_mb'])} MB "
        f"after the warm-up, {num(s['rss_end_mb'])} MB at the end, {num(s['rss_max_mb'])} MB at "
        f"most. Slopes after the warm-up, in MB per 10 min: anonymous RSS (heaps: what a leak "
        f"grows) {num(s['anon_slope_mb_per_10min'], 2)}, PSS "
        f"{num(s['pss_slope_mb_per_10min'], 2)}. `anon` and `file`: RssAnon and RssFile of "
        "/proc/PID/status (mapped files: code, libraries); shared memory (SQLite's WAL "
        "index) is in RSS too.",
        "",
        rss_table(data["samples"], s["warmup_s"]),
        "",
        "## Requests",
        "",
        f"{s['sent']:,} requests in {s['duration_s'] / 60:.1f} minutes ({num(s['rps'])} per "
        f"second): {s['ok']:,} answered in full, {s['failed']:,} failed. CPU of the gateway's "
        f"process tree: {num(s['cpu_ms_per_req'], 2)} ms per request. Upstream calls: "
        f"{s['upstream_calls']:,} ({num(s['upstream_calls_per_req'], 2)} per request: retries "
        f"of faulty answers); faults injected: {faults}.",
        "",
        lanes_table(data["lanes"]),
        "",
        "Failed requests by kind (`status`: an error status; `incomplete`: a stream that "
        "ended without its end marker, with the error event's code; `timeout`: no answer "
        "within the client's timeout; `connection`: a connection error):",
        "",
        errors_table(data["lanes"]),
        "",
        "Request-log rows by outcome:",
        "",
        rows_table(data.get("log_rows") or []),
    ]
    last_errors = (data.get("gateway_log") or {}).get("last_errors")
    if last_errors:
        parts += ["", "Last error lines of the gateway's log:", "", "```", *last_errors, "```"]
    if data.get("errors"):
        parts += ["", "Problems during the run:", ""]
        parts += [f"* {e}" for e in data["errors"]]
    return "\n".join(parts) + "\n"


def write_soak_md(path: Path, document: str, json_name: str) -> None:
    """Replace the results section of ``path`` (between its markers) with ``document``."""
    text = path.read_text()
    found = re.search(re.escape(RESULTS_BEGIN) + r".*?" + re.escape(RESULTS_END), text, re.S)
    if found is None:
        raise ValueError(f"{path} has no {RESULTS_BEGIN} ... {RESULTS_END} section")
    body = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", document, flags=re.M)
    section = (
        f"{RESULTS_BEGIN}\n\nFrom `bench/results/{json_name}`.\n\n{body.strip()}\n\n{RESULTS_END}"
    )
    path.write_text(text[: found.start()] + section + text[found.end() :])
