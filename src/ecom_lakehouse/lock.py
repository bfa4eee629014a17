"""One pipeline process per lakehouse at a time.

Spark does not lock a streaming checkpoint against a second process, and two bronze runs on one
checkpoint can both commit the same micro-batch. Locally every stage therefore holds an exclusive
``flock`` on ``<lakehouse>/.lock``; the operating system releases it when the process dies, so a
killed run never leaves a stale lock. On the platforms the scheduler serialises runs instead: the
Databricks job has ``max_concurrent_runs: 1`` and EMR runs a cluster's steps one at a time.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from ecom_lakehouse.config import ConfigError, Lakehouse

LOCK_FILE = ".lock"


class LakehouseBusy(Exception):
    """Another ecom-lakehouse process holds the lakehouse."""


@contextmanager
def exclusive(lake: Lakehouse, command: str):
    if lake.env != "local":
        yield
        return
    root = Path(lake.root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{root}: cannot write the lakehouse there ({err.strerror}); "
                          f"pass --lakehouse a folder you can write to") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LakehouseBusy(f"{root} is in use by {holder}; wait for it to finish, "
                                f"or give this run another --lakehouse") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"ecom-lakehouse {command} (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
