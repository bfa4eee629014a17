"""`ecom-lakehouse databricks …`: upload raw data, run the bundle's job, read the results.

Built on databricks-sdk's WorkspaceClient: authentication comes from the usual
environment variables (DATABRICKS_HOST, DATABRICKS_TOKEN, or OAuth M2M client id/secret)
or a ~/.databrickscfg profile (--profile); never from this repository.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import BinaryIO, cast

from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound
from databricks.sdk.service.jobs import RunLifeCycleState, RunResultState
from databricks.sdk.service.sql import StatementState

from ecom_lakehouse.analyst_views import views
from ecom_lakehouse.ops.progress import ProgressReader
from ecom_lakehouse.schemas import TABLES

JOB_NAME = "ecom_lakehouse_pipeline"
TERMINAL = {RunLifeCycleState.TERMINATED, RunLifeCycleState.SKIPPED, RunLifeCycleState.INTERNAL_ERROR}

SHOWN_ROWS = 15  # rows of each view printed by `results`; the rest are counted


class OperationFailed(RuntimeError):
    """The remote operation ended badly; the message says what and where to look."""


def client(profile: str | None = None, host: str | None = None) -> WorkspaceClient:
    return WorkspaceClient(profile=profile, host=host) if (profile or host) else WorkspaceClient()


def delivery_name(table: str, local: Path) -> str:
    """<table>/<table>-<sha256 prefix>.csv: new content gets a new name, so an upload never writes over a
    file bronze already ingested (a file source never reads a path twice), and the same content is
    recognised and skipped."""
    digest = hashlib.sha256()
    with local.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{table}/{table}-{digest.hexdigest()[:16]}.csv"


def upload_raw(w: WorkspaceClient, source_dir: str, volume: str, echo=print) -> dict[str, str]:
    """Upload <dir>/<table>.csv to <volume>/raw/<table>/ under a content-derived name, skipping content
    that is already there."""
    actions = {}
    base = volume.rstrip("/") + "/raw"
    for table in TABLES:
        local = Path(source_dir) / f"{table}.csv"
        if not local.exists():
            raise OperationFailed(f"{local}: missing; `ecom-lakehouse generate --out {source_dir}` writes all 7 tables")
        remote = f"{base}/{delivery_name(table, local)}"
        size = local.stat().st_size
        try:
            w.files.get_metadata(remote)
            echo(f"  {table + '.csv':<24} already delivered as {remote}: skipped")
            actions[table] = "skipped"
            continue
        except NotFound:
            pass
        with local.open("rb") as f:
            # a file-like wrapper: its read() draws progress, the rest is the file's own
            w.files.upload(remote, cast(BinaryIO, ProgressReader(f, size, f"{table}.csv")), overwrite=False)
        actions[table] = "uploaded"
    echo(f"raw files are in {base}/<table>/")
    return actions


def find_job(w: WorkspaceClient, name: str = JOB_NAME):
    """The bundle's job: exact name in prod, '[dev <user>] <name>' in a dev target."""
    matches = [j for j in w.jobs.list() if j.settings and j.settings.name
               and (j.settings.name == name or j.settings.name.endswith(f"] {name}"))]
    if not matches:
        raise OperationFailed(f"no job named {name!r} in this workspace: deploy it with `databricks bundle deploy`")
    if len(matches) > 1:
        names = ", ".join(sorted(j.settings.name for j in matches))
        raise OperationFailed(f"several jobs match {name!r} ({names}): pass the exact one with --job-name")
    return matches[0]


# The job's own timeout_seconds (resources/ecom_lakehouse.job.yml): waiting longer waits for nothing.
RUN_WAIT_SECONDS = 4 * 3600


def run_job(w: WorkspaceClient, name: str = JOB_NAME, wait: bool = True, poll_seconds: float = 10.0,
            echo=print, timeout_seconds: float = RUN_WAIT_SECONDS) -> int:
    job = find_job(w, name)
    run_id = w.jobs.run_now(job_id=job.job_id).run_id
    run = w.jobs.get_run(run_id=run_id)
    echo(f"started {job.settings.name} (run {run_id}): {run.run_page_url}")
    if not wait:
        return run_id
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout_seconds
    while True:
        run = w.jobs.get_run(run_id=run_id)
        for task in run.tasks or []:
            state = task.state.result_state or task.state.life_cycle_state if task.state else None
            label = getattr(state, "value", str(state))
            if seen.get(task.task_key) != label:
                seen[task.task_key] = label
                echo(f"  {task.task_key:<10} {label}")
        if run.state and run.state.life_cycle_state in TERMINAL:
            break
        if time.monotonic() >= deadline:
            still = getattr(run.state.life_cycle_state, "value", "not finished") if run.state else "not finished"
            raise OperationFailed(f"run {run_id} is still {still} after {timeout_seconds:,.0f} s of waiting; it goes on "
                                  f"without us: follow it at {run.run_page_url}")
        time.sleep(poll_seconds)
    if run.state.result_state == RunResultState.SUCCESS:
        echo(f"run {run_id} succeeded: {run.run_page_url}")
        return run_id
    failed = [t for t in run.tasks or [] if t.state and t.state.result_state not in (None, RunResultState.SUCCESS)]
    details = []
    for task in failed:
        output = w.jobs.get_run_output(run_id=task.run_id)
        details.append(f"{task.task_key}: {output.error or task.state.state_message or 'failed'}")
    raise OperationFailed(f"run {run_id} {getattr(run.state.result_state, 'value', 'failed')}: "
                          f"{'; '.join(details) or run.state.state_message} ({run.run_page_url})")


def query_results(w: WorkspaceClient, warehouse_id: str, catalog: str, schema: str, poll_seconds: float = 2.0,
                  echo=print) -> dict[str, list[list[str]]]:
    """The analyst's views over gold (the dashboard's datasets) through the Statement Execution API on a SQL
    warehouse, with the gold schema as the statements' default."""
    results = {}
    for view in views().values():
        title = view.title
        resp = w.statement_execution.execute_statement(statement=view.sql, warehouse_id=warehouse_id, catalog=catalog,
                                                       schema=schema, wait_timeout="30s")
        while resp.status.state in (StatementState.PENDING, StatementState.RUNNING):
            time.sleep(poll_seconds)
            resp = w.statement_execution.get_statement(resp.statement_id)
        if resp.status.state != StatementState.SUCCEEDED:
            message = resp.status.error.message if resp.status.error else resp.status.state.value
            raise OperationFailed(f"query '{title}' failed: {message}")
        columns = [c.name for c in resp.manifest.schema.columns]
        rows, chunk = [], resp.result
        while chunk is not None:  # a larger result comes in chunks: the first with the statement, the rest by index
            rows += chunk.data_array or []
            chunk = (w.statement_execution.get_statement_result_chunk_n(resp.statement_id, chunk.next_chunk_index)
                     if chunk.next_chunk_index is not None else None)
        results[title] = rows
        echo(f"{title}:")
        echo("  " + " | ".join(columns))
        for row in rows[:SHOWN_ROWS]:
            echo("  " + " | ".join("" if v is None else str(v) for v in row))
        if len(rows) > SHOWN_ROWS:
            echo(f"  … {len(rows) - SHOWN_ROWS:,} more rows")
    return results
