"""Maintenance: compaction and VACUUM remove what no recent version needs, and nothing else."""
import os
import time
from pathlib import Path

import pytest

from ecom_lakehouse import maintain
from ecom_lakehouse.config import ConfigError, Lakehouse, Table


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

    # `other` holds only files from just now: nothing VACUUM could delete, so it does not run there
    assert [(m.table, m.files_before, m.files_after, m.vacuumed) for m in done] == [
        (other.path, 2, 1, False), (table.path, 3, 1, True)]
    assert "VACUUM START" not in {h.operation for h in other.history(spark).collect()}
    assert table.read(spark).count() == 20  # read back from disk, not from the run
    assert len(table.read(spark).inputFiles()) == 1 and len(other.read(spark).inputFiles()) == 1
    on_disk = _parquet_files(folder)
    assert old_orphan.name not in on_disk and new_orphan.name in on_disk  # only what is older than 7 days goes
    assert {Path(p).name for p in table.read(spark).inputFiles()} <= on_disk
    history = table.history(spark).select("operation", "operationParameters").collect()
    vacuum = next(h for h in history if h.operation == "VACUUM START")
    assert int(vacuum.operationParameters["specifiedRetentionMillis"]) == 168 * 3600 * 1000
    assert "OPTIMIZE" in {h.operation for h in history}


def _age(paths, days: float) -> None:
    then = time.time() - days * 24 * 3600
    for path in paths:
        os.utime(path, (then, then))


def test_vacuum_runs_only_where_a_file_is_old_enough_or_a_partition_folder_is_empty(spark, tmp_path):
    lake = Lakehouse(root=str(tmp_path / "lake"))
    table = lake.table("gold", "model_verdicts")
    table.replace_where(spark.range(4).selectExpr("id", "id % 2 AS part"), "true", partition_by=("part",))
    folder = Path(table.path)
    assert not maintain.vacuum_can_delete(spark, table, 168)
    _age(folder.glob("_delta_log/*"), 30)  # an old log alone deletes nothing: VACUUM never touches it
    assert not maintain.vacuum_can_delete(spark, table, 168)
    _age(folder.glob("part=1/*.parquet"), 8)  # a data file older than the retention, in a partition
    assert maintain.vacuum_can_delete(spark, table, 168)
    assert not maintain.vacuum_can_delete(spark, table, 24 * 9)  # ... but not older than nine days
    (folder / "part=7").mkdir()  # an empty partition folder: VACUUM removes it whatever its age
    assert maintain.vacuum_can_delete(spark, table, 24 * 9)


def test_a_catalog_table_is_vacuumed_once_its_first_commit_is_older_than_the_retention(spark):
    table = Table("gold", "maintained", full_name="spark_catalog.default.maintained")
    spark.sql("DROP TABLE IF EXISTS spark_catalog.default.maintained")
    spark.sql("CREATE TABLE spark_catalog.default.maintained USING DELTA AS SELECT id FROM range(3)")
    try:
        spark.sql("INSERT INTO spark_catalog.default.maintained SELECT id FROM range(5)")
        assert not maintain.vacuum_can_delete(spark, table, 168)
        location = table.detail(spark)["location"].removeprefix("file:")
        _age(Path(location).glob("_delta_log/00000000000000000000.json"), 8)  # Delta dates commits by their files
        assert maintain.vacuum_can_delete(spark, table, 168)
    finally:
        spark.sql("DROP TABLE IF EXISTS spark_catalog.default.maintained")


def test_retention_below_seven_days_is_refused(spark, tmp_path):
    with pytest.raises(ConfigError, match="168"):
        maintain.run(spark, Lakehouse(root=str(tmp_path)), retain_hours=24)


def test_tables_are_registered_only_on_emr_with_both_databases(spark, tmp_path):
    assert Lakehouse(root=str(tmp_path)).catalog_database("gold") is None
    emr = Lakehouse(env="emr", root="s3://lake", schema="ecom_silver", gold_schema="ecom_gold")
    assert [emr.catalog_database(layer) for layer in ("bronze", "silver", "gold")] == [None, "ecom_silver", "ecom_gold"]
    assert Lakehouse(env="emr", root="s3://lake").catalog_database("gold") is None
