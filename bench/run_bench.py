"""``make bench``: measure the bare upstream, flask-aigateway (every feature on) on SQLite and on
PostgreSQL + Redis, and LiteLLM proxy when installed, in one run, against the same mock.

Phases, each bounded in time: the matrix (upstream latency profiles x JSON/stream x
concurrency, every target back to back in each cell, ``--repeats`` passes), the worker-class
comparison (gunicorn gthread against gevent on streams), the open-streams test (N concurrent
long streams), an optional soak, and a py-spy profile of the hot path. Writes
``bench/results/bench-<time>.json`` and ``.md``, and regenerates ``bench/RESULTS.md`` (keeping
its hand-written notes).

Run from the repository root: ``python -m bench.run_bench --help``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from .markdown import results_markdown, write_results_md
from .runner import Bench, log
from .targets import HERE, SetupError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a 3-4 minute smoke run: 1 pass, short measurements, 100 open streams "
        "of 6 s; does not touch bench/RESULTS.md",
    )
    p.add_argument("--repeats", type=int, default=2, help="passes over the matrix (medians)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument(
        "--profiles", default="0:0,50:2", help="upstream latency_ms:chunk_delay_ms pairs"
    )
    p.add_argument("--modes", default="json,stream")
    p.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    p.add_argument(
        "--open-streams",
        type=int,
        default=1000,
        help="concurrent streams held in the open-streams test (0 skips it)",
    )
    p.add_argument(
        "--stream-seconds", type=float, default=30.0, help="how long each open stream lasts"
    )
    p.add_argument(
        "--open-ramp",
        type=float,
        default=5.0,
        help="seconds over which the open streams are started",
    )
    p.add_argument(
        "--worker-class",
        default="gevent",
        choices=("gthread", "gevent", "gevent_pywsgi"),
        help="gunicorn worker class of the measured gateways (make run's is gevent)",
    )
    p.add_argument(
        "--compare-worker-class",
        default="gthread",
        help="the other worker class, compared on streams ('' skips)",
    )
    p.add_argument(
        "--soak",
        type=float,
        default=0.0,
        help="seconds of extra JSON load after the matrix, RSS sampled every 30 s",
    )
    p.add_argument(
        "--profile-seconds",
        type=float,
        default=10.0,
        help="py-spy recording per profile (0 skips profiling)",
    )
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument(
        "--require-postgres",
        action="store_true",
        help="fail instead of skipping when PostgreSQL or Redis is unreachable",
    )
    p.add_argument(
        "--pg-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a database to connect to for CREATE/DROP DATABASE of a throw-away one",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--litellm-venv", default=str(HERE.parent / ".venv-litellm"))
    p.add_argument("--litellm-workers", type=int, default=2)
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument(
        "--results-md",
        default=str(HERE / "RESULTS.md"),
        help="regenerated after a full run ('' leaves it alone)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the scratch folder and logs")
    p.add_argument(
        "--render",
        metavar="JSON",
        help="measure nothing: rewrite --results-md from this results file (after "
        "editing the notes, or the tables' code)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.duration, a.warmup = 1, 1.5, 0.5
        a.open_streams = min(a.open_streams, 100)
        a.stream_seconds = min(a.stream_seconds, 6.0)
        a.open_ramp = min(a.open_ramp, 1.0)
        a.profile_seconds = min(a.profile_seconds, 3.0)
        a.results_md = ""
    a.concurrency = [int(x) for x in a.concurrency.split(",") if x.strip()]
    a.profiles = [
        tuple(float(v or 0) for v in [*part.split(":"), "0"][:2])
        for part in a.profiles.split(",")
        if part.strip()
    ]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not set(modes) <= {"json", "stream"}:
        p.error("--modes takes json and/or stream")
    a.modes = [m == "stream" for m in modes]
    a.repeats = min(max(a.repeats, 1), 10)
    a.duration = min(max(a.duration, 1.0), 120.0)
    a.soak = min(max(a.soak, 0.0), 3600.0)
    return a


def _stop_on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        source = Path(args.render)
        write_results_md(
            Path(args.results_md), results_markdown(json.loads(source.read_text())), source.name
        )
        log(f"# rewrote {args.results_md} from {source}")
        return
    # Started in the background, SIGINT may be ignored: both signals end the run through the
    # same path, which stops every process it started and drops its database and Redis keys.
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    bench = Bench(args)
    try:
        data = bench.run()
    except SetupError as error:
        sys.exit(f"bench: {error}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"bench-{stamp}{'-quick' if args.quick else ''}"
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    document = results_markdown(data)
    (out_dir / f"{name}.md").write_text(document)
    print(document)
    log(f"# wrote {out_dir / name}.json and .md in {data['meta']['wall_s']} s")
    if args.results_md:
        write_results_md(Path(args.results_md), document, f"{name}.json")
        log(f"# regenerated {args.results_md}")


if __name__ == "__main__":
    main()
