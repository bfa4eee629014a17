"""A small fake Databricks workspace on 127.0.0.1 that answers the REST endpoints the
operations CLI uses (Jobs 2.2 with paging, Files, Statement Execution), so tests exercise the
real databricks-sdk code paths over HTTP, including its retry on 429."""
from __future__ import annotations

import http.server
import json
import threading
from urllib.parse import parse_qs, urlparse


class FakeWorkspace:
    def __init__(self, fail_task: str | None = None, throttle_first_statement: bool = True, never_finish: bool = False):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.jobs = [{"job_id": i, "settings": {"name": f"other_job_{i}"}} for i in range(1, 30)]
        self.jobs.append({"job_id": 77, "settings": {"name": "[dev alice] ecom_lakehouse_pipeline"}})
        self.fail_task = fail_task
        self.never_finish = never_finish
        self.run_polls = 0
        self.throttle = throttle_first_statement
        self.statements = 0
        self.statement_bodies: list[dict] = []  # each accepted statement request, as sent
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()

    # --- endpoint logic ------------------------------------------------------------
    def jobs_list(self, query):
        page = int(query.get("page_token", ["0"])[0])
        size = 20  # the workspace pages; the SDK must follow next_page_token
        body = {"jobs": self.jobs[page * size:(page + 1) * size]}
        if (page + 1) * size < len(self.jobs):
            body["next_page_token"] = str(page + 1)
            body["has_more"] = True
        return 200, body

    def run_get(self, query):
        self.run_polls += 1
        tasks = ["bronze", "silver", "gold"]
        url = f"{self.host}/#job/77/run/{query['run_id'][0]}"
        if self.run_polls < 3 or self.never_finish:
            return 200, {"run_id": 500, "run_page_url": url, "state": {"life_cycle_state": "RUNNING"},
                         "tasks": [{"task_key": t, "run_id": 600 + i,
                                    "state": {"life_cycle_state": "RUNNING" if i == 0 else "PENDING"}}
                                   for i, t in enumerate(tasks)]}
        failed = self.fail_task
        task_states = []
        for i, t in enumerate(tasks):
            if failed and tasks.index(t) > tasks.index(failed):
                st = {"life_cycle_state": "SKIPPED", "result_state": "UPSTREAM_FAILED"}
            elif t == failed:
                st = {"life_cycle_state": "TERMINATED", "result_state": "FAILED", "state_message": "Task failed"}
            else:
                st = {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS"}
            task_states.append({"task_key": t, "run_id": 600 + i, "state": st})
        run_state = {"life_cycle_state": "TERMINATED", "result_state": "FAILED" if failed else "SUCCESS"}
        return 200, {"run_id": 500, "run_page_url": url, "state": run_state, "tasks": task_states}

    def statement(self, body):
        self.statements += 1
        if self.throttle and self.statements == 1:
            return 429, {"error_code": "TOO_MANY_REQUESTS", "message": "slow down"}
        self.statement_bodies.append(body)
        return 200, {"statement_id": f"st-{self.statements}", "status": {"state": "PENDING"}}

    def statement_get(self, statement_id):
        return 200, {"statement_id": statement_id, "status": {"state": "SUCCEEDED"},
                     "manifest": {"schema": {"columns": [{"name": "metric", "position": 0}, {"name": "value", "position": 1}]}},
                     "result": {"chunk_index": 0, "data_array": [["revenue", "123.45"]], "next_chunk_index": 1}}

    def statement_chunk(self, statement_id, index):
        return 200, {"chunk_index": index, "data_array": [["margin", "60.0"]]}

    def _handler(self):
        ws = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=None, headers=None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _route(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ws.requests.append((self.command, url.path))
                p = url.path
                if p.startswith("/api/2.0/fs/files/"):
                    path = p[len("/api/2.0/fs/files"):]
                    if self.command == "HEAD":
                        if path not in ws.files:
                            return self._send(404, {"error_code": "NOT_FOUND", "message": path})
                        return self._send(200, None, {"Content-Length": str(len(ws.files[path])),
                                                      "Last-Modified": "Wed, 25 Nov 2026 10:00:00 GMT"})
                    if self.command == "PUT":
                        ws.files[path] = raw
                        return self._send(204)
                if p == "/api/2.2/jobs/list":
                    return self._send(*ws.jobs_list(query))
                if p == "/api/2.2/jobs/run-now":
                    return self._send(200, {"run_id": 500, "number_in_job": 1})
                if p == "/api/2.2/jobs/runs/get":
                    return self._send(*ws.run_get(query))
                if p == "/api/2.2/jobs/runs/get-output":
                    return self._send(200, {"error": "AnalysisException: table not found", "metadata": {}})
                if p == "/api/2.0/sql/statements" or p == "/api/2.0/sql/statements/":
                    return self._send(*ws.statement(json.loads(raw or b"{}")))
                if p.startswith("/api/2.0/sql/statements/") and "/result/chunks/" in p:
                    statement, _, index = p[len("/api/2.0/sql/statements/"):].partition("/result/chunks/")
                    return self._send(*ws.statement_chunk(statement, int(index)))
                if p.startswith("/api/2.0/sql/statements/"):
                    return self._send(*ws.statement_get(p.rsplit("/", 1)[-1]))
                return self._send(404, {"error_code": "NOT_FOUND", "message": f"fake workspace: no {p}"})

            do_GET = do_POST = do_PUT = do_HEAD = _route

        return Handler
