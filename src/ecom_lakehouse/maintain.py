"""Table maintenance: compact small files, then remove files no version within the retention needs.

Every bronze append, silver MERGE and gold overwrite leaves files the current version no longer
reads; without VACUUM the lake grows with every run. The retention may not go below 7 days (Delta's
own safety default): time travel, a concurrent reader, and a Delta stream that reads a table all need
the files of versions that recent. This project's streams read raw CSV files, not Delta tables, so
their checkpoints point at no Delta data file; the floor still keeps a week of history readable.

VACUUM deletes only files modified before the retention's cutoff (and folders left empty). Where no
file can be that old it would delete nothing, yet it still costs a listing, about seven Spark
actions and two commits per table: it is skipped then (`vacuum_can_delete`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from ecom_lakehouse.config import LAYERS, ConfigError, Lakehouse, Table
from ecom_lakehouse.files import list_status
from ecom_lakehouse.session import conf_within, cores, side_by_side

MIN_RETAIN_HOURS = 168


@dataclass(frozen=True)
class Maintained:
    table: str
    files_before: int
    files_after: int
    vacuumed: bool  # False: no file was old enough for VACUUM to delete, so it did not run


def _hidden(name: str) -> bool:
    """Names Delta's VACUUM neither lists nor deletes (`_delta_log`, checksum files; its
    DeltaTableUtils.isHiddenDirectory). Partition folders (`col=value`), `_change_data` and
    `_delta_index` are vacuumed, so they count."""
    return name.startswith((".", "_")) and "=" not in name and not name.startswith(("_change_data", "_delta_index"))


def _deletable_under(spark: SparkSession, folder: str, cutoff_ms: int, is_root: bool = True) -> bool:
    visible = [s for s in list_status(spark, folder) if not _hidden(s.name)]
    if not visible and not is_root:
        return True  # an empty partition folder: VACUUM removes it
    return any(_deletable_under(spark, s.path, cutoff_ms, False) if s.is_dir
               else s.modified_ms < cutoff_ms for s in visible)


def vacuum_can_delete(spark: SparkSession, table: Table, retain_hours: int) -> bool:
    """Whether VACUUM could delete anything in `table`: a file modified before the cutoff or an empty folder.

    A path table's folder is listed: it may hold files from before the table's first commit (a killed
    first write's). A catalog table is managed (this project never gives one a location): its storage is
    created with it, so nothing in it is older than its earliest commit, and Unity Catalog does not let
    a job list that storage anyway. Either way a table older than the retention is vacuumed."""
    cutoff_ms = int(time.time() * 1000) - retain_hours * 3_600_000
    if table.path:
        return _deletable_under(spark, table.path, cutoff_ms)
    first_commit_ms = table.history(spark).selectExpr("unix_millis(min(timestamp))").first()[0]
    return first_commit_ms < cutoff_ms


def _listing_parallelism(spark: SparkSession):
    """VACUUM lists a table's folders in a Spark job of `parallelPartitionDiscovery.parallelism` tasks
    (10,000 by default: minutes of empty tasks per unpartitioned table on a small cluster). A few
    tasks per core list these tables' handful of folders just as well."""
    return conf_within(spark, "spark.sql.sources.parallelPartitionDiscovery.parallelism",
                       str(4 * cores(spark)))


def maintain_table(spark: SparkSession, table, retain_hours: int) -> Maintained:
    # OPTIMIZE's own metrics give the file counts (it commits nothing when there is nothing to
    # compact): a DESCRIBE DETAIL before and after cost two snapshot computations per table.
    # VACUUM deletes only files no version reads, so it leaves the count as OPTIMIZE left it.
    compacted = table.optimize(spark)
    vacuumed = vacuum_can_delete(spark, table, retain_hours)
    if vacuumed:
        table.vacuum(spark, retain_hours)
    before = compacted.totalConsideredFiles
    return Maintained(str(table), before, before - compacted.numFilesRemoved + compacted.numFilesAdded, vacuumed)


def run(spark: SparkSession, lake: Lakehouse, retain_hours: int = MIN_RETAIN_HOURS, echo=print) -> list[Maintained]:
    if retain_hours < MIN_RETAIN_HOURS:
        raise ConfigError(f"--retain-hours {retain_hours} is below {MIN_RETAIN_HOURS} (7 days): older versions "
                          "must stay readable for time travel and running readers")
    tables = [table for layer in LAYERS for table in lake.existing_tables(spark, layer)]
    done = []
    with _listing_parallelism(spark):
        # One table's OPTIMIZE and VACUUM are mostly waits (log reads, listings, one storage call per file)
        # with small Spark jobs between them; each table still gets its own commits.
        results = side_by_side(spark, lambda t: maintain_table(spark, t, retain_hours), tables)
        for table, result in zip(tables, results, strict=True):
            done.append(result)
            vacuum = "vacuumed" if result.vacuumed else f"nothing older than {retain_hours} h to vacuum"
            echo(f"  {table.layer}/{table.name:<32} files {result.files_before:>4} -> {result.files_after:>4}  {vacuum}")
    vacuumed = sum(m.vacuumed for m in done)
    echo(f"  {len(done)} tables compacted; {vacuumed} vacuumed (files older than {retain_hours} h that no version "
         f"needs removed), {len(done) - vacuumed} held nothing that old")
    return done
