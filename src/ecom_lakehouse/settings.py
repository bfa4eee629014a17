"""Every ECOM_* environment variable the package reads, with its default and what it is for.

Nothing else in the package reads an ECOM_* variable (a test checks): `ecom-lakehouse --help` and the
README list these.
"""
from __future__ import annotations

import os

SETTINGS: dict[str, tuple[str | None, str]] = {
    "ECOM_DEBUG": (None, "any value: a failure ends in its traceback instead of one line"),
    "ECOM_SPARK_MASTER": ("local[*]", "local runs: Spark's master URL"),
    "ECOM_SPARK_REMOTE": (None, "local runs: a Spark Connect URL (sc://host:15002) to run through, or local[N] to start "
                                "a Connect server here, as standard access mode and serverless run Python (Spark 4)"),
    "ECOM_SHUFFLE_PARTITIONS": ("8", "local runs: spark.sql.shuffle.partitions"),
    "ECOM_WAREHOUSE_DIR": ("/tmp/ecom_lakehouse_warehouse", "local runs: the Spark SQL warehouse (and its Derby catalog)"),
    "ECOM_DRIVER_MEMORY": (None, "local runs: the driver JVM's heap, e.g. 4g; read only when the JVM starts"),
    "ECOM_RAW_STREAM": (None, "'files': bronze streams raw CSVs with Spark's file source on Databricks too, where "
                              "it uses Auto Loader otherwise (the Databricks twin sets it: Auto Loader exists only there)"),
}


def setting(name: str) -> str | None:
    """The variable's value, or its default; a name not listed above is a programming error."""
    default, _ = SETTINGS[name]
    return os.environ.get(name, default)


def described() -> str:
    """One line per variable, for --help."""
    return "\n".join(f"  {name:<24} {text}" + (f" (default {default})" if default else "")
                     for name, (default, text) in SETTINGS.items())
