"""Table maintenance: compact small files, then remove files no version within the retention needs.

Every bronze append, silver MERGE and gold overwrite leaves files the current version no longer
reads; without VACUUM the lake grows with every run. The retention may not go below 7 days (Delta's
own safety default): time travel, a concurrent reader, and a Delta stream that reads a table all need
the files of versions that recent. This project's streams read raw CSV files, not Delta tables, so
their checkpoints point at no Delta data file; the floor still keeps a week of history readable.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from ecom_lakehouse.config import LAYERS, ConfigError, Lakehouse
from ecom_lakehouse.session import conf_within, side_by_side

MIN_RETAIN_HOURS = 168


@dataclass(frozen=True)
class Maintained:
    table: str
    files_before: int
    files_after: int


def _listing_parallelism(spark: SparkSession):
    """VACUUM lists a table's folders in a Spark job of `parallelPartitionDiscovery.parallelism` tasks
    (10,000 by default: minutes of empty tasks per unpartitioned table on a small cluster). A few
    tasks per core list these tables' handful of folders just as well."""
    return conf_within(spark, "spark.sql.sources.parallelPartitionDiscovery.parallelism",
                       str(4 * spark.sparkContext.defaultParallelism))


def maintain_table(spark: SparkSession, table, retain_hours: int) -> Maintained:
    # OPTIMIZE's own metrics give the file counts (it commits nothing when there is nothing to
    # compact): a DESCRIBE DETAIL before and after cost two snapshot computations per table.
    # VACUUM deletes only files no version reads, so it leaves the count as OPTIMIZE left it.
    compacted = table.delta(spark).optimize().executeCompaction().select(
        "metrics.totalConsideredFiles", "metrics.numFilesRemoved", "metrics.numFilesAdded").first()
    table.delta(spark).vacuum(retain_hours)
    before = compacted.totalConsideredFiles
    return Maintained(str(table), before, before - compacted.numFilesRemoved + compacted.numFilesAdded)


def run(spark: SparkSession, lake: Lakehouse, retain_hours: int = MIN_RETAIN_HOURS, echo=print) -> list[Maintained]:
    if retain_hours < MIN_RETAIN_HOURS:
        raise ConfigError(f"--retain-hours {retain_hours} is below {MIN_RETAIN_HOURS} (7 days): older versions "
                          "must stay readable for time travel and running readers")
    tables = [table for layer in LAYERS for table in lake.existing_tables(spark, layer)]
    done = []
    with _listing_parallelism(spark):
        # One table's OPTIMIZE and VACUUM are mostly waits (log reads, listings, one storage call per file)
        # with small Spark jobs between them; each table still gets its own commits.
        for table, result in zip(tables, side_by_side(lambda t: maintain_table(spark, t, retain_hours), tables)):
            done.append(result)
            echo(f"  {table.layer}/{table.name:<32} files {result.files_before:>4} -> {result.files_after:>4}")
    echo(f"  {len(done)} tables compacted; files older than {retain_hours} h that no version needs removed")
    return done
