"""Gunicorn settings for ``make run``: ``gunicorn --config sample_app/gunicorn.conf.py``.

One worker process (DESIGN §3): without Redis, rate windows and router health live in that
process's memory, so several worker processes would each count on their own and multiply every
limit. ``WORKERS`` > 1 is accepted only with ``AIGATEWAY_REDIS_URL`` set, and is then the
default: one worker process per CPU.

The worker class is gevent: a proxy spends its time waiting on upstreams and holds long
streams, and a greenlet per connection does that with less CPU per request and far less memory
than an OS thread per connection (bench/RESULTS.md measures both). ``gthread`` stays available
(``WORKER_CLASS=gthread``, ``THREADS``) for host apps whose C extensions block without
cooperating with gevent; without gevent installed, gthread is used.

Environment: ``HOST`` (127.0.0.1), ``PORT`` (8000), ``WORKERS`` (1; with Redis, the CPU
count), ``WORKER_CLASS``
(``gevent``), ``WORKER_CONNECTIONS`` (concurrent connections of a gevent worker, 2000: size it
for the streams you expect to hold, not for the CPU), ``THREADS`` (gthread's threads, 8),
``GRACEFUL_TIMEOUT`` (seconds streams in flight may take to finish on SIGTERM, Ctrl-C or
SIGQUIT, 120),
``EVENT_LOOP_PROBE`` (a file path: the gevent worker writes how long its hub was blocked, see
``sample_app/loopwatch.py``), ``MALLOC_TRIM`` (1: a worker gives its freed heap back to the
system after a burst, ``sample_app/memtrim.py``; 0 turns it off), ``ACCESS_LOG`` (unset: no
access log, since every request is already in the gateway's request log; ``-`` for stdout or a
file path),
``AIGATEWAY_FINISH_AFTER_RESPONSE`` (``true`` here unless set: see below),
``PROMETHEUS_MULTIPROC_DIR`` (with several workers: where they write their metrics, emptied on
start; default a fresh temporary directory).
"""

from __future__ import annotations

import gc
import glob
import importlib.util
import os
import shutil
import signal
import tempfile
from typing import Any


def _whole_number(name: str, default: int, minimum: int) -> int:
    """The environment variable ``name`` as a whole number of at least ``minimum``.

    A bad value stops the start in one line naming the variable and what it accepts
    (``SystemExit``: gunicorn prints the message and exits with status 1, no traceback).
    Without the check ``int()`` raised a traceback out of this file, and a value out of range
    was worse: ``WORKERS=0`` or ``WORKER_CONNECTIONS=0`` listened and never answered,
    ``GRACEFUL_TIMEOUT=-5`` failed every worker at boot.
    """
    given = os.environ.get(name, "").strip()
    if not given:
        return default
    try:
        value = int(given)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise SystemExit(
            f"{name}={given!r} is not valid: use a whole number of {minimum} or more "
            f"(default {default}), or unset it."
        )
    return value


def _workers() -> int:
    """``WORKERS``; by default one process, or one per CPU when Redis holds the shared state."""
    redis = bool(os.environ.get("AIGATEWAY_REDIS_URL"))
    count = _whole_number("WORKERS", (os.cpu_count() or 1) if redis else 1, 1)
    if count > 1 and not redis:
        # SystemExit: gunicorn prints the message and stops, without a traceback.
        raise SystemExit(
            f"WORKERS={count} needs AIGATEWAY_REDIS_URL: without Redis each worker process keeps "
            "its own rate windows, which multiplies every limit. Use WORKER_CONNECTIONS for "
            "concurrency, or set AIGATEWAY_REDIS_URL=redis://…"
        )
    return count


_WORKER_CLASSES = ("gevent", "gthread")


def _worker_class() -> str:
    """``WORKER_CLASS``, one of the two the gateway is built and tested for; by default
    gevent when it is installed. Anything else stopped the start with gunicorn's traceback
    ("class uri 'bogus' invalid or not found"), the one variable here without a one-line
    refusal."""
    chosen = os.environ.get("WORKER_CLASS", "").strip()
    gevent = importlib.util.find_spec("gevent") is not None
    if not chosen:
        return "gevent" if gevent else "gthread"
    if chosen not in _WORKER_CLASSES:
        raise SystemExit(
            f"WORKER_CLASS={chosen!r} is not valid: use gevent (the default) or gthread, or "
            "unset it."
        )
    if chosen == "gevent" and not gevent:
        raise SystemExit(
            "WORKER_CLASS=gevent needs gevent, which is not installed: pip install "
            "'flask-aigateway[server]' (make run does), or use WORKER_CLASS=gthread."
        )
    return chosen


# gunicorn closes every response once it is written (PEP 3333), so each /v1 request can end
# (settle, meter, queue its log row) after its answer is sent (flask_aigateway.after_response);
# set before the workers build the app. An explicit AIGATEWAY_FINISH_AFTER_RESPONSE wins.
os.environ.setdefault("AIGATEWAY_FINISH_AFTER_RESPONSE", "true")

# sample_app.create_app, with a configuration error stopping the server in one line.
wsgi_app = "sample_app:server_app()"
bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
workers = _workers()
worker_class = _worker_class()
threads = _whole_number("THREADS", 8, 1)
worker_connections = _whole_number("WORKER_CONNECTIONS", 2000, 1)
# Neither worker's heartbeat waits for requests, so long streams are not cut; on shutdown
# (SIGTERM, and Ctrl-C or SIGQUIT: see on_starting and post_worker_init), requests and streams
# in flight get GRACEFUL_TIMEOUT seconds to finish, then the request log is flushed
# (worker_exit). The master waits STOP_MARGIN seconds longer before it kills a worker outright:
# the gevent worker, told the plain GRACEFUL_TIMEOUT in post_worker_init, then ends the streams
# still running itself (each logged and billed for what it sent, its reservation given back)
# instead of dying with them as in a crash.
GRACEFUL_TIMEOUT = _whole_number("GRACEFUL_TIMEOUT", 120, 0)
STOP_MARGIN = 10
timeout = 60
graceful_timeout = GRACEFUL_TIMEOUT + STOP_MARGIN
keepalive = 5
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# Gunicorn 23+ opens a control socket at one fixed path per user; two servers would collide.
control_socket_disable = True


def _public_url(address: str) -> str:
    """The URL to print for a bind address (a wildcard host is shown as 127.0.0.1)."""
    if address.startswith(("unix:", "fd://")):
        return address
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


#: Young collections every 50,000 new container objects instead of 700: a request allocates
#: hundreds, almost all freed by reference counting, so the default ran a collection every
#: few requests, and full collections (which stop every stream) followed every 70 young ones.
GC_THRESHOLDS = (50_000, 20, 20)


def post_worker_init(worker: Any) -> None:
    """Once the worker has loaded the app: seed starter providers and print the welcome text
    (first worker only, :func:`announce_once`), and take everything loaded so far out of the
    garbage collector's sight.

    ``gc.freeze()`` moves the objects that live as long as the process (modules, the app,
    SQLAlchemy's metadata: several hundred thousand) to a permanent generation. Without it
    each full collection walks them all — pauses of 100-160 ms measured with a thousand open
    streams, during which no request moves.
    """
    announce_once(worker)
    stop_gracefully_on_interrupt(worker)
    # The worker's own deadline for requests in flight at shutdown, ahead of the master's
    # (graceful_timeout above), so that what it cuts is cleaned up before the master's SIGKILL.
    worker.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT)
    probe = os.environ.get("EVENT_LOOP_PROBE", "").strip()
    if probe:
        from sample_app import loopwatch

        loopwatch.start(probe)
    memory_probe = os.environ.get("MEMORY_PROBE", "").strip()
    if memory_probe:
        from sample_app import memprobe

        memprobe.start(memory_probe)
    if os.environ.get("MALLOC_TRIM", "1").strip() != "0":
        from sample_app import memtrim

        memtrim.start()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


#: The signals that stop the server the way SIGTERM does: Ctrl-C in the terminal (SIGINT, sent to
#: the master and every worker, the whole foreground process group) and SIGQUIT (Ctrl-\ there).
STOP_SIGNALS = (signal.SIGINT, signal.SIGQUIT)


def stop_gracefully_on_interrupt(worker: Any) -> None:
    """Make the worker stop on SIGINT and SIGQUIT as it does on SIGTERM (``handle_exit``).

    gunicorn's workers exit at once on those (``handle_quit``: ``sys.exit(0)`` in the middle of
    whatever runs), so Ctrl-C on ``make run`` cut every stream with no error event, no
    request-log row, no cost, and left its worst-case budget reservation held until the period
    ended. Called once the worker has installed its own handlers (gevent and gthread alike).
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, worker.handle_exit)
        signal.siginterrupt(signum, False)


def announce_once(worker: Any) -> bool:
    """Seed the starter providers and print the welcome text from the first worker the master
    spawns (gunicorn numbers them by ``age``, from 1), and from no other: with ``WORKERS`` > 1
    every worker printed it, dashboard token included, once per worker. The master cannot print
    it itself: it never loads the app (the gevent worker must patch the standard library before
    anything imports it). A worker respawned later is not the first and prints nothing.

    Returns whether this worker announced.
    """
    if worker.age != 1:
        return False
    from sample_app.bootstrap import announce

    announce(worker.wsgi, base_url=_public_url(worker.cfg.bind[0]))
    return True


def worker_exit(server: Any, worker: Any) -> None:
    """Flush the request log before the worker goes (atexit does too; this runs first)."""
    from flask_aigateway.accounting.logwriter import close_all_writers

    close_all_writers()


#: The metrics directory :func:`on_starting` created (removed by :func:`on_exit`), if any.
_CREATED: dict[str, str] = {}


def on_starting(server: Any) -> None:
    """Make the master stop on Ctrl-C and SIGQUIT as on SIGTERM, and set up the Prometheus
    multiprocess directory when there are several workers.

    gunicorn's master takes SIGINT and SIGQUIT as a quick shutdown (workers told to quit at
    once, then killed): the arbiter looks its handlers up by name (``handle_<signal>``), so
    here they become its SIGTERM handler, the graceful stop (``GRACEFUL_TIMEOUT``). A second
    signal during that stop is still gunicorn's quick shutdown, for an operator who will not
    wait.

    Several worker processes each count in their own memory, so a scrape would report only the
    worker that answered it. With more than one, every worker writes its values to one
    directory (``PROMETHEUS_MULTIPROC_DIR``) that ``/v1/metrics`` sums: set here, in the master
    before any worker starts (and imports prometheus_client). One given by the operator is used
    as it is; else a fresh one is made under ``TMPDIR`` and removed on exit. Either way it is
    emptied first: values of an earlier run's processes would be summed in.
    """
    server.handle_int = server.handle_quit = server.handle_term
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not path and server.cfg.workers > 1:
        path = _CREATED["path"] = tempfile.mkdtemp(prefix="aigateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)


def child_exit(server: Any, worker: Any) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, drop the dead worker's live gauges (in-flight requests);
    its counters stay in the sum."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory :func:`on_starting` created (one given by the operator
    stays)."""
    if "path" in _CREATED:
        shutil.rmtree(_CREATED["path"], ignore_errors=True)
