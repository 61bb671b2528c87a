"""Locust event listeners: options, weights, figures across workers, the summary at the end.

On a worker the figures go to the master with each of Locust's stats reports
(``report_to_master``); the master merges them (``worker_report``).  The master (or the
single process of a local run) samples open streams once a second, writes
``<csv prefix>_sse.csv`` every second and at the end, prints the summary when Locust exits,
and serves it in the web UI at ``/sse-summary.csv``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gevent
from locust.runners import WorkerRunner

from loadtest import options
from loadtest.stream import FIGURES

_state: dict[str, Any] = {}


def register(events: Any) -> None:
    events.init_command_line_parser.add_listener(options.add_options)
    events.init.add_listener(on_init)
    events.test_start.add_listener(on_test_start)
    events.test_stop.add_listener(on_test_stop)
    events.report_to_master.add_listener(on_report_to_master)
    events.worker_report.add_listener(on_worker_report)
    events.quit.add_listener(on_quit)


def _is_worker(environment: Any) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def csv_path(environment: Any) -> Path | None:
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    return Path(f"{prefix}_sse.csv") if prefix else None


def write_csv(environment: Any) -> None:
    path = csv_path(environment)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(FIGURES.csv_text(time.time()))
        tmp.replace(path)


def on_init(environment: Any, **_kw: Any) -> None:
    _state["environment"] = environment
    options.apply_weights(environment.parsed_options, environment.user_classes)
    if _is_worker(environment):
        return
    gevent.spawn(_every_second, environment)
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is not None:
        _add_route(web_ui)


def _every_second(environment: Any) -> None:
    while True:
        gevent.sleep(1.0)
        if FIGURES.started is not None and FIGURES.stopped is None:
            FIGURES.sample_open()
            write_csv(environment)


def _add_route(web_ui: Any) -> None:
    from flask import Response

    def sse_summary() -> Any:
        return Response(FIGURES.csv_text(time.time()), mimetype="text/csv")

    web_ui.app.add_url_rule("/sse-summary.csv", view_func=web_ui.auth_required_if_enabled(sse_summary))


def on_test_start(environment: Any, **_kw: Any) -> None:
    options.apply_weights(environment.parsed_options, environment.user_classes)
    FIGURES.reset()
    FIGURES.started = time.time()


def on_test_stop(environment: Any, **_kw: Any) -> None:
    if not _is_worker(environment):
        FIGURES.stopped = time.time()


def on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data["sse"] = FIGURES.take_report()


def on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    report = data.get("sse")
    if report is not None:
        FIGURES.merge(client_id, report)


def on_quit(exit_code: int, **_kw: Any) -> None:
    environment = _state.get("environment")
    if environment is None or _is_worker(environment):
        return
    if FIGURES.started is None:
        return
    print(FIGURES.table(time.time()), flush=True)
    write_csv(environment)
