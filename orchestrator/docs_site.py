"""`orchestrator docs`: the lineage docs site (`dbt docs generate --static`), and a local server for it."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import shutil
import signal
import threading
from pathlib import Path

from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject, DbtResult
from orchestrator.errors import OrchestratorError
from orchestrator.feedback import SILENT, Feedback

DOCS_NODES = {"model", "seed", "test", "snapshot", "analysis"}  # what `dbt docs generate` compiles


@dataclasses.dataclass
class DocsSite:
    index: Path
    dbt: DbtResult
    nodes_compiled: int
    catalog_relations: int  # tables/views dbt found in the database (0: nothing built yet)

    def as_dict(self) -> dict:
        return {
            "index": str(self.index),
            "dbt_invocation_id": self.dbt.invocation_id,
            "nodes_compiled": self.nodes_compiled,
            "catalog_relations": self.catalog_relations,
        }


def build(settings: Settings, conn: ConnInfo, out_dir: Path, feedback: Feedback = SILENT) -> DocsSite:
    """``dbt docs generate --static`` against ``conn``; copies the page to ``out_dir/index.html``.

    dbt writes into the docs run's own target path, so the docs never overwrite the dry run's artifacts.
    The catalog (column types, row counts) comes from the dry-run and legacy schemas as they are now.
    """
    project = DbtProject(settings, conn)
    run = project.docs()
    total = run.node_count(DOCS_NODES) or project.full().node_count(DOCS_NODES)
    compiled = []
    with feedback.progress("dbt docs generate", total) as advance:

        def finished(unique_id: str, status: str) -> None:
            compiled.append(unique_id)
            advance(unique_id, status)

        result = run.invoke(["docs", "generate", "--static"], on_node_finished=finished)
    page = result.target_path / "static_index.html"
    if not result.success or not page.exists():
        raise OrchestratorError(result.describe_failure())
    try:
        catalog = json.loads((result.target_path / "catalog.json").read_text())
        relations = len(catalog.get("nodes", {})) + len(catalog.get("sources", {}))
    except (OSError, ValueError):
        relations = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    shutil.copyfile(page, index)
    return DocsSite(index=index, dbt=result, nodes_compiled=len(compiled), catalog_relations=relations)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


def server(directory: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``directory`` on 127.0.0.1 (``port`` 0: a free one), not yet serving."""
    if not (directory / "index.html").exists():
        raise OrchestratorError(f"there is no docs site in {directory}: run `orchestrator docs --out {directory}`")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise OrchestratorError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def serve(httpd: http.server.HTTPServer, feedback: Feedback = SILENT) -> None:
    """Serve until Ctrl-C or SIGTERM (the server from ``server``). Both end it the same way, so the
    process exits normally: killed by a bare SIGTERM, it left the semaphores dbt's import made to the
    resource tracker, which then warned about leaked objects."""
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if on_main_thread else None
    with httpd:
        try:  # from the first line on: a signal right after it still stops cleanly
            feedback.note(f"Serving {url(httpd)} (Ctrl-C to stop)")
            httpd.serve_forever()
        except KeyboardInterrupt:
            feedback.note("Stopped.")
        finally:
            if on_main_thread:
                signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def url(httpd: http.server.HTTPServer) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}/"
