"""Maintenance: compaction and VACUUM remove what no recent version needs, and nothing else."""
import os
import time
from pathlib import Path

import pytest

from ecom_lakehouse import maintain
from ecom_lakehouse.config import ConfigError, Lakehouse


def _parquet_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.parquet")}


def test_maintain_compacts_and_vacuums_what_no_recent_version_needs(spark, tmp_path):
    lake = Lakehouse(root=str(tmp_path / "lake"))
    table = lake.table("gold", "sales_daily")
    for n in (10, 20):  # version 0, then an overwrite: version 0's files are no longer read
        table.overwrite(spark.range(n).repartition(3))
    other = lake.table("silver", "orders")  # maintained beside it: each gets its own result
    other.overwrite(spark.range(5).repartition(2))
    folder = Path(table.path)
    # Files a killed writer left behind (in no version): one 8 days old, one from just now.
    week_ago = time.time() - 8 * 24 * 3600
    old_orphan, new_orphan = folder / "part-99998-orphan-old.snappy.parquet", folder / "part-99999-orphan-new.snappy.parquet"
    for orphan in (old_orphan, new_orphan):
        orphan.write_bytes((folder / sorted(_parquet_files(folder))[0]).read_bytes())
    os.utime(old_orphan, (week_ago, week_ago))

    done = maintain.run(spark, lake, echo=lambda *_: None)

    assert [(m.table, m.files_before, m.files_after) for m in done] == [(other.path, 2, 1), (table.path, 3, 1)]
    assert table.read(spark).count() == 20  # read back from disk, not from the run
    assert len(table.read(spark).inputFiles()) == 1 and len(other.read(spark).inputFiles()) == 1
    on_disk = _parquet_files(folder)
    assert old_orphan.name not in on_disk and new_orphan.name in on_disk  # only what is older than 7 days goes
    assert {Path(p).name for p in table.read(spark).inputFiles()} <= on_disk
    history = table.delta(spark).history().select("operation", "operationParameters").collect()
    vacuum = next(h for h in history if h.operation == "VACUUM START")
    assert int(vacuum.operationParameters["specifiedRetentionMillis"]) == 168 * 3600 * 1000
    assert "OPTIMIZE" in {h.operation for h in history}


def test_retention_below_seven_days_is_refused(spark, tmp_path):
    with pytest.raises(ConfigError, match="168"):
        maintain.run(spark, Lakehouse(root=str(tmp_path)), retain_hours=24)


def test_tables_are_registered_only_on_emr_with_both_databases(spark, tmp_path):
    assert Lakehouse(root=str(tmp_path)).catalog_database("gold") is None
    emr = Lakehouse(env="emr", root="s3://lake", schema="ecom_silver", gold_schema="ecom_gold")
    assert [emr.catalog_database(layer) for layer in ("bronze", "silver", "gold")] == [None, "ecom_silver", "ecom_gold"]
    assert Lakehouse(env="emr", root="s3://lake").catalog_database("gold") is None
