"""Locust event listeners: options, weights, stream figures across workers, where they show.

On a worker the figures go to the master with each of Locust's stats reports
(``report_to_master``); the master merges them (``worker_report``), so that its figures cover
every worker.  The master (or the single process of a local run):

- samples open streams once a second and writes ``<csv prefix>_streams.csv`` every second and
  at the end (``--csv``), where it also writes Locust's ``_stats.csv``, ``_failures.csv`` and
  ``_exceptions.csv`` once more, so that they hold the final table (Locust rewrites them only
  every second);
- prints the stream figures after Locust's own tables when it exits, and makes the exit code 1
  when a chunk was lost or repeated or a stream failed a check (``quitting``);
- forgets the figures with Locust's reset of statistics (the web UI's RESET, ``--reset-stats``),
  and has the workers forget theirs (a custom message); reports a worker sent before it heard of
  the reset are dropped;
- at the stop of a distributed run whose workers still run users (a headless run's end, where
  Locust's master waits only 0.5 s for the workers' last reports), asks every worker to stop its
  users (within ``--stop-timeout``) and send its last figures and stats, and waits for them; a
  worker that never answers is named in the summary;
- shows them in the web UI: a "Streams" tab (Locust's ``extended_tabs``, ``extended_tables``
  and ``extended_csv_files`` template arguments, its rows added to ``/stats/requests`` as
  ``extended_stats``), ``/streams`` (the console table, text) and ``/streams.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtest import options
from loadtest.figures import PERCENTILES
from loadtest.stream import FIGURES

_state: dict[str, Any] = {}
log = logging.getLogger("loadtest")

RESET = "loadtest_reset"  # master → workers: {"epoch": n}, forget the figures not reported yet
FINISH = "loadtest_finish"  # master → workers: stop the users, send the last figures
FINISHED = "loadtest_finished"  # worker → master: the last figures (a report of Figures.take_report)
FINISH_MARGIN = 10.0  # s the master waits for the last figures beyond --stop-timeout

TAB = "streams"
COLUMNS = (
    ("title", "Figure"),
    ("unit", "Unit"),
    ("count", "Count"),
    ("value", "Value"),
    ("mean", "Mean"),
    *((f"p{p:g}", f"p{p:g}") for p in PERCENTILES),
    ("max", "Max"),
    ("meaning", "Meaning"),
)


def register(events: Any) -> None:
    events.init_command_line_parser.add_listener(options.add_options)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.report_to_master.add_listener(on_report_to_master)
    events.worker_report.add_listener(on_worker_report)
    events.quitting.add_listener(on_quitting)
    events.quit.add_listener(on_quit)
    events.reset_stats.add_listener(on_reset_stats)
    events.spawning_complete.add_listener(on_spawning_complete)


def _is_worker(environment: Any) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def csv_path(environment: Any) -> Path | None:
    """``<prefix>_streams.csv`` next to Locust's own files, or None without ``--csv``."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    return Path(f"{prefix}_streams.csv") if prefix else None


def _replace(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` anew through a temporary file (``write`` gets a ``csv.writer``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        write(csv.writer(f))
    os.replace(tmp, path)


def write_csv(environment: Any) -> None:
    path = csv_path(environment)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(FIGURES.csv_text(time.time()), encoding="utf-8")
        tmp.replace(path)


def write_final_locust_csv(environment: Any) -> None:
    """Locust's ``<prefix>_stats.csv``, ``_failures.csv``, ``_exceptions.csv`` from its final figures.

    Locust rewrites them once a second and never at exit, so they can miss the run's last
    second.  Each is replaced by a new file (Locust's writer keeps its handle on the old one,
    which it closes after this, unseen).  ``_stats_history.csv`` is a time series and is left
    as Locust wrote it.
    """
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix or environment.runner is None:
        return
    stats = StatsCSV(environment, PERCENTILES_TO_REPORT)
    _replace(Path(f"{prefix}_stats.csv"), stats.requests_csv)
    _replace(Path(f"{prefix}_failures.csv"), stats.failures_csv)
    _replace(Path(f"{prefix}_exceptions.csv"), stats.exceptions_csv)


def on_init(environment: Any, **_kw: Any) -> None:
    _state["environment"] = environment
    options.apply_weights(environment.parsed_options, environment.user_classes)
    FIGURES.targets = options.targets(environment.parsed_options)
    runner = environment.runner
    if _is_worker(environment):
        runner.register_message(RESET, on_reset_message)
        runner.register_message(FINISH, on_finish_message, concurrent=True)
        return
    if isinstance(runner, MasterRunner):
        runner.register_message(FINISHED, on_finished_message)
    gevent.spawn(_every_second, environment)
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is not None:
        add_web_ui(web_ui)


def _every_second(environment: Any) -> None:
    while True:
        gevent.sleep(1.0)
        if FIGURES.started is not None and FIGURES.stopped is None:
            FIGURES.sample_open()
            write_csv(environment)


def web_rows() -> list[dict[str, Any]]:
    """The rows of the web UI's Streams tab (the keys of :data:`COLUMNS`)."""
    return [{key: row.get(key, "") for key, _ in COLUMNS} for row in FIGURES.rows(time.time())]


def add_web_ui(web_ui: Any) -> None:
    """The Streams tab, ``/streams`` and ``/streams.csv`` in Locust's web UI (``web_ui.app`` is Flask)."""
    from flask import Response, request

    web_ui.template_args["extended_tabs"] = [{"title": "Streams", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "/streams.csv", "title": "Download stream figures CSV (TTFT, ITL, TPOT, goodput, resumes)"}
    ]

    def streams_csv() -> Any:
        return Response(
            FIGURES.csv_text(time.time()),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=streams.csv"},
        )

    def streams_text() -> Any:
        return Response(FIGURES.table(time.time()) + "\n", mimetype="text/plain")

    app = web_ui.app
    app.add_url_rule("/streams.csv", view_func=web_ui.auth_required_if_enabled(streams_csv))
    app.add_url_rule("/streams", view_func=web_ui.auth_required_if_enabled(streams_text))

    @app.after_request  # type: ignore[untyped-decorator]
    def extend_stats(response: Any) -> Any:
        if request.path != "/stats/requests" or response.status_code != 200 or not response.is_json:
            return response
        body = response.get_json()
        body["extended_stats"] = [{"key": TAB, "data": web_rows()}]
        response.set_data(json.dumps(body))
        return response


def on_test_start(environment: Any, **_kw: Any) -> None:
    parsed = environment.parsed_options
    options.apply_weights(parsed, environment.user_classes)
    FIGURES.reset()
    FIGURES.targets = options.targets(parsed)
    FIGURES.started = time.time()


def on_test_stop(environment: Any, **_kw: Any) -> None:
    if _is_worker(environment):
        return
    runner = environment.runner
    if isinstance(runner, MasterRunner) and runner.user_count > 0:
        collect_last_figures(environment, runner)
    FIGURES.stopped = time.time()


def collect_last_figures(environment: Any, runner: Any) -> None:
    """Master, at a stop whose workers still run users: their last figures, before Locust quits.

    Locust's master stops a headless run by telling the workers to quit and waiting 0.5 s for
    their last reports, while each worker lets its users end their task (``--stop-timeout``):
    what ends later is lost.  So each worker is asked first (:data:`FINISH`) to stop its users
    and send Locust's last stats report and its last figures (:data:`FINISHED`); this waits for
    every worker up to ``--stop-timeout`` + :data:`FINISH_MARGIN` s, and names in the summary
    the workers that never answered.
    """
    waiting = {node.id for node in runner.clients.all}
    if not waiting:
        return
    done = gevent.event.Event()
    _state["finishing"] = (waiting, done)
    runner.send_message(FINISH, {})
    deadline = time.monotonic() + float(environment.stop_timeout or 0) + FINISH_MARGIN
    try:
        while waiting and time.monotonic() < deadline:
            done.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            waiting.intersection_update(runner.clients.keys())  # a worker that quit answers no more
    finally:
        _state.pop("finishing", None)
    if waiting:
        FIGURES.unreported = sorted(waiting)
        log.warning("no last stream figures from worker(s) %s: not counted", ", ".join(sorted(waiting)))


def on_finish_message(environment: Any, msg: Any, **_kw: Any) -> None:
    """Worker, :data:`FINISH`: stop the users (Locust's stop, honouring ``--stop-timeout``), report."""
    runner = environment.runner
    runner.stop()
    send_stats = getattr(runner, "_send_stats", None)  # Locust's own last report (its table's requests)
    if callable(send_stats):
        send_stats()  # carries the figures too (report_to_master)
    runner.send_message(FINISHED, FIGURES.take_report())


def on_finished_message(environment: Any, msg: Any, **_kw: Any) -> None:
    """Master, :data:`FINISHED`: a worker's last figures."""
    FIGURES.merge(msg.node_id, msg.data)
    finishing = _state.get("finishing")
    if finishing is not None:
        waiting, done = finishing
        waiting.discard(msg.node_id)
        if not waiting:
            done.set()


def on_reset_stats(**_kw: Any) -> None:
    """Locust reset its statistics (the web UI's RESET): the stream figures too, workers' included."""
    environment = _state.get("environment")
    if environment is None or _is_worker(environment):
        return
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        epoch = FIGURES.reset_workers((node.id for node in runner.clients.all), time.time())
        runner.send_message(RESET, {"epoch": epoch})
    else:
        FIGURES.clear(time.time())


def on_spawning_complete(**_kw: Any) -> None:
    """``--reset-stats``: Locust resets its statistics once every user is started; so do the figures."""
    environment = _state.get("environment")
    if environment is not None and environment.reset_stats:
        on_reset_stats()


def on_reset_message(environment: Any, msg: Any, **_kw: Any) -> None:
    """Worker, :data:`RESET`: forget what was not reported yet."""
    FIGURES.reset_by_master(int(msg.data["epoch"]))


def on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data["streams"] = FIGURES.take_report()


def on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    report = data.get("streams")
    if report is not None:
        FIGURES.merge(client_id, report)


def on_quitting(environment: Any, **_kw: Any) -> None:
    """Exit code 1 when a chunk was lost or repeated, or a stream failed a check."""
    if _is_worker(environment) or not FIGURES.broken:
        return
    if not environment.process_exit_code:
        environment.process_exit_code = 1


def on_quit(exit_code: int, **_kw: Any) -> None:
    environment = _state.get("environment")
    if environment is None or _is_worker(environment):
        return
    write_final_locust_csv(environment)
    if FIGURES.started is None:
        return
    print("\n" + FIGURES.table(time.time()), flush=True)
    write_csv(environment)
