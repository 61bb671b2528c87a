"""Locust event listeners: options, weights, stream figures across workers, where they show.

On a worker the figures go to the master with each of Locust's stats reports
(``report_to_master``); the master merges them (``worker_report``), so that its figures cover
every worker.  The master (or the single process of a local run):

- samples open streams once a second and writes ``<csv prefix>_streams.csv`` every second and
  at the end (``--csv``);
- prints the stream figures after Locust's own tables when it exits, and makes the exit code 1
  when a chunk was lost or repeated or a stream failed a check (``quitting``);
- shows them in the web UI: a "Streams" tab (Locust's ``extended_tabs``, ``extended_tables``
  and ``extended_csv_files`` template arguments, its rows added to ``/stats/requests`` as
  ``extended_stats``), ``/streams`` (the console table, text) and ``/streams.csv``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gevent
from locust.runners import WorkerRunner

from loadtest import options
from loadtest.figures import PERCENTILES
from loadtest.stream import FIGURES

_state: dict[str, Any] = {}

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


def _is_worker(environment: Any) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def csv_path(environment: Any) -> Path | None:
    """``<prefix>_streams.csv`` next to Locust's own files, or None without ``--csv``."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    return Path(f"{prefix}_streams.csv") if prefix else None


def write_csv(environment: Any) -> None:
    path = csv_path(environment)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(FIGURES.csv_text(time.time()), encoding="utf-8")
        tmp.replace(path)


def on_init(environment: Any, **_kw: Any) -> None:
    _state["environment"] = environment
    options.apply_weights(environment.parsed_options, environment.user_classes)
    FIGURES.targets = options.targets(environment.parsed_options)
    if _is_worker(environment):
        return
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
    if not _is_worker(environment):
        FIGURES.stopped = time.time()


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
    if environment is None or _is_worker(environment) or FIGURES.started is None:
        return
    print("\n" + FIGURES.table(time.time()), flush=True)
    write_csv(environment)
