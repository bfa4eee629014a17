"""The operations CLI against a local fake workspace, through the real databricks-sdk."""
import pytest
from databricks.sdk import WorkspaceClient

from ecom_lakehouse.analyst_views import views
from ecom_lakehouse.cli import main
from ecom_lakehouse.ops import databricks_ops as ops
from ecom_lakehouse.schemas import TABLES
from tests.fake_workspace import FakeWorkspace


@pytest.fixture
def raw_dir(tmp_path):
    for t in TABLES:
        (tmp_path / f"{t}.csv").write_text(f"header of {t}\n1,2,3\n")
    return tmp_path


def _client(ws):
    return WorkspaceClient(host=ws.host, token="not-a-real-token")


def test_upload_raw_uploads_then_skips_unchanged_files(raw_dir, capsys):
    with FakeWorkspace() as ws:
        w = _client(ws)
        assert set(ops.upload_raw(w, str(raw_dir), "/Volumes/main/shop/lake").values()) == {"uploaded"}
        first = {f"/Volumes/main/shop/lake/raw/{ops.delivery_name(t, raw_dir / f'{t}.csv')}" for t in TABLES}
        assert set(ws.files) == first and all(f"/raw/{t}/{t}-" in p for t, p in zip(TABLES, sorted(first), strict=True))
        users = f"/Volumes/main/shop/lake/raw/{ops.delivery_name('users', raw_dir / 'users.csv')}"
        assert ws.files[users] == (raw_dir / "users.csv").read_bytes()
        (raw_dir / "users.csv").write_text("changed and longer\n")
        actions = ops.upload_raw(w, str(raw_dir), "/Volumes/main/shop/lake")
        assert actions["users"] == "uploaded" and actions["orders"] == "skipped"
        # the new content went to a new name; the ingested file was not written over
        assert ws.files[users] != b"changed and longer\n" and len(ws.files) == len(TABLES) + 1
        assert "100%" in capsys.readouterr().out  # the progress bar was drawn


def test_run_finds_the_dev_job_across_pages_and_follows_it_to_success(capsys):
    with FakeWorkspace() as ws:
        run_id = ops.run_job(_client(ws), wait=True, poll_seconds=0)
        assert run_id == 500
        pages = [p for m, p in ws.requests if p == "/api/2.2/jobs/list"]
        assert len(pages) == 2  # the job is on the second page
        out = capsys.readouterr().out
        assert "[dev alice] ecom_lakehouse_pipeline" in out and "SUCCESS" in out and "/#job/77/run/500" in out


def test_a_failed_run_exits_non_zero_with_the_failing_tasks_error(capsys):
    with FakeWorkspace(fail_task="silver") as ws:
        with pytest.raises(ops.OperationFailed, match="silver: AnalysisException: table not found"):
            ops.run_job(_client(ws), wait=True, poll_seconds=0)


def test_run_command_exit_code_on_failure(monkeypatch, capsys):
    with FakeWorkspace(fail_task="gold") as ws:
        monkeypatch.setenv("DATABRICKS_HOST", ws.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", "not-a-real-token")
        monkeypatch.setattr(ops.time, "sleep", lambda s: None)
        assert main(["databricks", "run", "--wait"]) == 1
        assert "gold: AnalysisException" in capsys.readouterr().err


def test_results_retries_a_429_and_polls_pending_statements(capsys):
    with FakeWorkspace() as ws:
        results = ops.query_results(_client(ws), "wh-1", "main", "shop", poll_seconds=0)
        assert len(results) == len(views())
        assert all(rows == [["revenue", "123.45"], ["margin", "60.0"]] for rows in results.values())  # both chunks
        posts = [p for m, p in ws.requests if m == "POST" and p.startswith("/api/2.0/sql/statements")]
        assert len(posts) == len(views()) + 1  # one throttled, retried by the SDK
        # each analyst view's text as it is, the gold schema as its default
        assert [(b["statement"], b["catalog"], b["schema"]) for b in ws.statement_bodies] == [
            (view.sql, "main", "shop") for view in views().values()]


def test_missing_job_says_how_to_deploy():
    with FakeWorkspace() as ws:
        with pytest.raises(ops.OperationFailed, match="databricks bundle deploy"):
            ops.find_job(_client(ws), "no_such_job")


def test_waiting_for_a_run_ends_at_the_timeout_and_says_where_the_run_goes_on():
    with FakeWorkspace(never_finish=True) as ws:
        with pytest.raises(ops.OperationFailed, match=r"still RUNNING after 0 s of waiting.*#job/77/run/500"):
            ops.run_job(_client(ws), poll_seconds=0, timeout_seconds=0, echo=lambda *_: None)
