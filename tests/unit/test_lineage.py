"""Which commits count as a new version of a table's data: the ones that change rows or columns.

Predictive optimization (Databricks) commits to UC managed tables in the background: compaction,
clustering, deletion-vector purges, statistics, vacuum (its operation types:
docs.databricks.com/aws/en/admin/system-tables/predictive-optimization). None changes a row, so a
table rebuilt from the versions before them is still current."""
from __future__ import annotations

import pytest

from ecom_lakehouse import lineage
from ecom_lakehouse.config import Table


@pytest.fixture()
def table(spark, tmp_path):
    table = Table("silver", "probe", path=str(tmp_path / "probe"))
    spark.range(40).selectExpr("id", "id % 4 AS bucket").repartition(4).write.format("delta").save(table.path)
    return table


def test_maintenance_commits_of_every_kind_leave_the_data_version_where_it_was(spark, table):
    built = lineage.data_version(spark, table)
    path = f"delta.`{table.path}`"
    spark.sql(f"ALTER TABLE {path} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    spark.sql(f"DELETE FROM {path} WHERE id = 3")  # a real change: a deletion vector
    built = lineage.data_version(spark, table)
    assert built == table.version(spark)
    # what predictive optimization and `maintain` run: each a commit that rewrites files or metadata only
    spark.sql(f"REORG TABLE {path} APPLY (PURGE)")  # purges deletion vectors
    spark.sql(f"OPTIMIZE {path}")
    # row tracking on an existing table backfills every file: a ROW TRACKING BACKFILL commit
    spark.sql(f"ALTER TABLE {path} SET TBLPROPERTIES ('delta.enableRowTracking' = 'true')")
    # RETAIN 0 so that it deletes something; listed in 2 tasks, not Spark's default 10,000 (30 s here)
    vacuum_conf = {"spark.databricks.delta.retentionDurationCheck.enabled": "false",
                   "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2"}
    for key, value in vacuum_conf.items():
        spark.conf.set(key, value)
    try:
        spark.sql(f"VACUUM {path} RETAIN 0 HOURS")
    finally:
        for key in vacuum_conf:
            spark.conf.unset(key)
    operations = [r["operation"] for r in table.history(spark).orderBy("version").collect()]
    assert {"REORG", "OPTIMIZE", "ROW TRACKING BACKFILL", "SET TBLPROPERTIES", "VACUUM END"} <= set(operations), operations
    assert table.version(spark) > built
    assert lineage.data_version(spark, table) == built


@pytest.mark.parametrize("change", ["DELETE FROM {t} WHERE id = 1", "UPDATE {t} SET bucket = 9 WHERE id = 2",
                                    "INSERT INTO {t} VALUES (100, 0)", "RESTORE TABLE {t} TO VERSION AS OF 0",
                                    "ALTER TABLE {t} ADD COLUMNS (note STRING)"])
def test_a_commit_that_changes_rows_or_columns_is_a_new_data_version(spark, table, change):
    before = lineage.data_version(spark, table)
    spark.sql(f"INSERT INTO delta.`{table.path}` VALUES (101, 1)")  # so RESTORE to 0 changes something
    before = lineage.data_version(spark, table)
    spark.sql(change.format(t=f"delta.`{table.path}`"))
    assert lineage.data_version(spark, table) == table.version(spark) > before
