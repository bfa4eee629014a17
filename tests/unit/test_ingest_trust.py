"""Ingestion you can trust: awkward file names, checkpoint resets, rewritten files, a reconciliation
that reads the tables back (and is shown failing), one-line errors, one process per lakehouse."""
import shutil
import subprocess
import sys
import textwrap

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from ecom_lakehouse import bronze, files, reconcile
from ecom_lakehouse.cli import entry, main
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import raw_names
from tests.unit.test_bronze import GOOD, USERS_HEADER, _write

ORDERS_HEADER = ",".join(raw_names("orders"))


def order(order_id: int, user_id: int = 1) -> str:
    return (f"{order_id},{user_id},Complete,F,2022-01-01 10:00:00 UTC,,2022-01-02 10:00:00 UTC,"
            f"2022-01-03 10:00:00 UTC,1")


def ids(spark, lake, layer="bronze", table="orders", key="order_id"):
    return sorted(int(r[key]) for r in lake.table(layer, table).read(spark).select(key).collect())


AWKWARD_NAMES = ["orders 2024-05-02.csv", "orders (1).csv", "p%20q.csv", "h#1.csv", "ventes été.csv",
                 "注文.csv", "a+b.csv"]


def test_every_row_of_awkwardly_named_files_lands(spark, tmp_path):
    raw = tmp_path / "raw"
    for i, name in enumerate(AWKWARD_NAMES):
        _write(raw / "orders" / name, [ORDERS_HEADER, order(10 * i + 1), order(10 * i + 2)])
    lake = Lakehouse(raw=str(raw), root=str(tmp_path / "lh"))
    [res] = bronze.run(spark, lake, ("orders",))
    assert ids(spark, lake) == sorted(10 * i + k for i in range(len(AWKWARD_NAMES)) for k in (1, 2))
    assert all(c.ok and c.in_file == 2 for c in res.checks) and len(res.checks) == len(AWKWARD_NAMES)
    sources = lake.table("bronze", "orders").read(spark).select("_source_file").distinct().collect()
    stored = {r[0].rsplit("/", 1)[-1] for r in sources}
    assert stored == set(AWKWARD_NAMES)  # decoded, as the files are named
    assert lake.quarantine("bronze").read(spark).count() == 0


def test_a_file_name_with_glob_characters_is_refused_before_anything_is_written(spark, tmp_path, capsys):
    """Spark 3.5's file source reads every other file of a micro-batch twice when one name holds '['."""
    raw = tmp_path / "raw"
    _write(raw / "orders" / "a.csv", [ORDERS_HEADER, order(1)])
    _write(raw / "orders" / "orders[1].csv", [ORDERS_HEADER, order(2)])
    capsys.readouterr()
    assert main(["bronze", "--raw", str(raw), "--lakehouse", str(tmp_path / "lh"), "--tables", "orders"]) == 2
    assert "orders[1].csv: file names with glob characters" in _one_error_line(capsys)
    assert not (tmp_path / "lh" / "bronze" / "orders").exists()


def test_a_file_without_a_known_header_is_quarantined_not_dropped(spark):
    lines = spark.createDataFrame([(ORDERS_HEADER, "file:/raw/orders/known.csv"), (order(1), "file:/raw/orders/known.csv"),
                                   (ORDERS_HEADER, "file:/raw/orders/late.csv"), (order(2), "file:/raw/orders/late.csv")],
                                  "value string, _source_file string")
    tagged = bronze.tag_lines(lines, {"known.csv": tuple(raw_names("orders"))}, "orders")
    parsed = bronze.parse_lines(tagged.where(~F.col(bronze.IS_HEADER)), "orders")
    assertDataFrameEqual(parsed.select("order_id", "_source_file", "reason"), [
        Row(order_id="1", _source_file="file:/raw/orders/known.csv", reason=None),
        Row(order_id=None, _source_file="file:/raw/orders/late.csv", reason=bronze.NO_HEADER_REASON)])


def test_a_reset_checkpoint_loses_nothing_and_reset_reingests_exactly_once(spark, tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "lh"
    _write(raw / "orders" / "day-1.csv", [ORDERS_HEADER, order(1), order(2)])
    lake = Lakehouse(raw=str(raw), root=str(root))
    bronze.run(spark, lake, ("orders",))
    shutil.rmtree(lake.checkpoint("bronze", "orders"))  # what users do to re-ingest
    _write(raw / "orders" / "day-2.csv", [ORDERS_HEADER] + [order(i) for i in range(3, 8)])
    [res] = bronze.run(spark, lake, ("orders",))
    # the new file's 5 rows are there (day-1 was read again by the new stream: a re-delivery silver dedupes)
    assert ids(spark, lake) == [1, 1, 2, 2, 3, 4, 5, 6, 7]
    assert [(c.source_file.rsplit("/", 1)[-1], c.in_file, c.ok) for c in res.checks] == [
        ("day-1.csv", 2, True), ("day-2.csv", 5, True)]
    capsys.readouterr()
    assert main(["bronze", "--raw", str(raw), "--lakehouse", str(root), "--tables", "orders", "--reset", "orders"]) == 0
    assert ids(spark, lake) == [1, 2, 3, 4, 5, 6, 7]  # exactly the files, once
    assert "reset" in capsys.readouterr().out


def test_a_rewritten_file_stops_the_run_naming_it_and_reset_ingests_it(spark, tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "lh"
    export = raw / "orders.csv"
    _write(export, [ORDERS_HEADER, order(1)])
    args = ["bronze", "--raw", str(raw), "--lakehouse", str(root), "--tables", "orders"]
    assert main(args) == 0
    lake = Lakehouse(raw=str(raw), root=str(root))
    version = lake.table("bronze", "orders").version(spark)
    _write(export, [ORDERS_HEADER, order(1), order(2)])  # the daily export, written over the same name
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "orders.csv: changed since bronze ingested it" in err[0] and "--reset orders" in err[0]
    assert lake.table("bronze", "orders").version(spark) == version
    assert main(args + ["--reset", "orders"]) == 0
    assert ids(spark, lake) == [1, 2]


def test_bronze_reconciliation_reads_the_tables_back_and_fails_on_a_lost_row(spark, tmp_path):
    raw = tmp_path / "raw"
    _write(raw / "users" / "part-1.csv", [USERS_HEADER, GOOD, GOOD.replace("1,Ann", "2,Ann"), "3,broken"])
    lake = Lakehouse(raw=str(raw), root=str(tmp_path / "lh"))
    [res] = bronze.run(spark, lake, ("users",))
    [check] = res.checks
    assert (check.in_file, check.in_bronze, check.quarantined, check.ok) == (3, 2, 1, True)
    lake.table("bronze", "users").delete(spark, "id = '2'")  # the fault: a row lost after the write
    [check] = reconcile.bronze_files(spark, lake, "users", res.stream_id, res.ingested)
    assert (check.in_file, check.in_bronze, check.quarantined, check.ok) == (3, 1, 1, False)
    with pytest.raises(reconcile.ReconciliationError, match="part-1.csv: 3 records in the file, 1 in bronze"):
        reconcile.raise_on_mismatch([check], "bronze")


def test_a_bronze_run_that_loses_a_row_exits_non_zero_naming_the_file(spark, tmp_path, capsys, monkeypatch):
    raw = tmp_path / "raw"
    _write(raw / "users" / "part-1.csv", [USERS_HEADER, GOOD, GOOD.replace("1,Ann", "2,Ann")])
    real = bronze.bronze_rows
    monkeypatch.setattr(bronze, "bronze_rows", lambda *a: real(*a).where("id != '2'"))  # a bug that drops a row
    capsys.readouterr()
    assert main(["bronze", "--raw", str(raw), "--lakehouse", str(tmp_path / "lh"), "--tables", "users"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "part-1.csv: 2 records in the file, 1 in bronze + 0 quarantined" in err[0]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_silver_without_bronze_names_the_table_and_the_command_to_run(tmp_path, capsys):
    capsys.readouterr()
    assert main(["silver", "--raw", str(tmp_path), "--lakehouse", str(tmp_path / "lh")]) == 2
    line = _one_error_line(capsys)
    assert "needs the bronze table" in line and "`ecom-lakehouse bronze`" in line


def test_an_unwritable_lakehouse_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    capsys.readouterr()
    assert main(["gold", "--lakehouse", str(tmp_path / "a-file" / "lh")]) == 2
    assert "cannot write the lakehouse there" in _one_error_line(capsys)


def test_an_unknown_table_name_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bronze", "--tables", "customers"])
    assert exit_.value.code == 2 and "invalid choice: 'customers'" in capsys.readouterr().err


def test_an_unexpected_failure_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from ecom_lakehouse import stages

    def broken(*_):
        raise RuntimeError("[DELTA_SOMETHING] the JVM said no\n\tat org.apache.spark.Something(…)\n\tat …")
    monkeypatch.setattr(stages, "run_stage", broken)
    capsys.readouterr()
    assert main(["gold", "--lakehouse", str(tmp_path / "lh")]) == 1
    assert _one_error_line(capsys) == ("ecom-lakehouse: error: RuntimeError: [DELTA_SOMETHING] the JVM said no "
                                       "(set ECOM_DEBUG=1 for the traceback)")


def test_the_console_script_exits_with_the_code(tmp_path, monkeypatch):
    """Databricks' wheel-task launcher calls the entry point and ignores what it returns."""
    monkeypatch.setattr(sys, "argv", ["ecom-lakehouse", "bronze", "--raw", str(tmp_path / "nowhere"),
                                      "--lakehouse", str(tmp_path / "lh")])
    with pytest.raises(SystemExit) as exit_:
        entry()
    assert exit_.value.code == 2


def test_a_second_process_on_the_same_lakehouse_is_refused_and_writes_nothing(spark, tmp_path, capsys):
    raw, root = tmp_path / "raw", tmp_path / "lh"
    _write(raw / "orders.csv", [ORDERS_HEADER, order(1)])
    args = ["bronze", "--raw", str(raw), "--lakehouse", str(root), "--tables", "orders"]
    assert main(args) == 0
    lake = Lakehouse(raw=str(raw), root=str(root))
    version = lake.table("bronze", "orders").version(spark)
    _write(raw / "orders.csv", [ORDERS_HEADER, order(1), order(2)])
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ecom_lakehouse.config import Lakehouse
        from ecom_lakehouse.lock import exclusive
        with exclusive(Lakehouse(root={str(root)!r}), "bronze"):
            print("locked", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        capsys.readouterr()
        assert main(args + ["--reset", "orders"]) == 2
        line = _one_error_line(capsys)
        assert "is in use by ecom-lakehouse bronze (pid" in line and "wait for it to finish" in line
        assert lake.table("bronze", "orders").version(spark) == version
    finally:
        holder.communicate("done\n", timeout=30)
    assert main(args + ["--reset", "orders"]) == 0  # the lock goes with the process that held it
    assert ids(spark, lake) == [1, 2]


@pytest.mark.parametrize("uri, path", [
    ("s3a://lake-raw/raw/orders/orders%20(1)%23%25+x.csv", "s3a://lake-raw/raw/orders/orders (1)#%+x.csv"),
    ("dbfs:/Volumes/main/ecom/lakehouse/raw/orders/ventes%20%C3%A9t%C3%A9.csv",
     "/Volumes/main/ecom/lakehouse/raw/orders/ventes été.csv"),
    ("file:/raw/orders/注文%20x.csv", "file:/raw/orders/注文 x.csv"),
])
def test_stream_file_uris_decode_to_the_listed_path_on_every_platform(spark, uri, path):
    """What a file source reports (a URI) must map back to the path bronze lists, whatever the scheme:
    Hadoop's path string on object storage, the mounted path's name on local disk and volumes."""
    from ecom_lakehouse import files

    local = files.mounted(path)
    listed = files.qualified_name(local) if local else spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path).toString()
    assert listed == path and files.literal_path(path) == path
    got = spark.createDataFrame([(uri,)], "u string").select(files.decoded_file_path(F.col("u"))).first()[0]
    assert got == path


def test_a_table_whose_creation_was_killed_is_created_on_the_rerun(spark, tmp_path):
    """Found by the random-kill benchmark: a SIGKILL during a table's first commit leaves a _delta_log
    without a commit, and Delta's createIfNotExists then fails with DELTA_TABLE_NOT_FOUND forever."""
    from pathlib import Path

    from ecom_lakehouse.schemas import bronze_schema

    table = Lakehouse(raw=str(tmp_path), root=str(tmp_path / "lh")).table("bronze", "orders")
    log = Path(table.path) / "_delta_log"
    (log / "_commits").mkdir(parents=True)
    (log / ".00000000000000000000.json.37b7b16d.tmp").write_text("{}")  # what the kill left
    table.ensure(spark, bronze_schema("orders"))
    assert table.exists(spark) and table.read(spark).count() == 0


@pytest.mark.parametrize("raw, folder", [("s3://raw-bucket", "s3://raw-bucket/"), ("s3://raw-bucket/", "s3://raw-bucket/"),
                                         ("s3://raw-bucket/landing", "s3://raw-bucket/landing"),
                                         ("/Volumes/c/s/v/raw", "/Volumes/c/s/v/raw"), ("data/raw", "data/raw")])
def test_a_bucket_given_as_the_raw_folder_is_a_path_hadoop_accepts(raw, folder):
    # `--raw s3://bucket` is what `emr submit` passes; S3A refused `s3://bucket` (found by the EMR twin).
    assert files.folder_path(raw) == folder


def test_a_jvm_failure_is_one_line_that_names_its_root_cause(spark, tmp_path, capsys, monkeypatch):
    """A real Py4J error: Spark says only "An error occurred while calling oNN.parquet."; the cause
    that tells a user what to fix is at the end of the Java exception chain."""
    from ecom_lakehouse import stages

    monkeypatch.delenv("ECOM_DEBUG", raising=False)
    monkeypatch.setattr(stages, "run_stage", lambda *_: spark.range(1).write.parquet("/proc/ecom/unwritable"))
    capsys.readouterr()
    assert main(["gold", "--lakehouse", str(tmp_path / "lh")]) == 1
    line = _one_error_line(capsys)
    assert "java.io.IOException: Mkdirs failed to create file:/proc/ecom/unwritable" in line, line
    assert "An error occurred while calling" not in line and "Traceback" not in line


def test_a_failure_in_a_streams_python_batch_is_one_line_naming_the_python_error(spark, tmp_path, capsys, monkeypatch):
    """When Python code the JVM calls back (a stream's foreachBatch, as in bronze) fails, the end of the
    Java chain holds that Python traceback as text: its last line is the error, not "Traceback (...)"."""
    from ecom_lakehouse import stages

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x\n")

    def failing_batch(*_):
        raise ValueError("the batch's own error")

    def stream(*_):
        query = (spark.readStream.text(str(tmp_path / "in")).writeStream.foreachBatch(failing_batch)
                 .option("checkpointLocation", str(tmp_path / "checkpoint")).trigger(availableNow=True).start())
        query.awaitTermination()

    monkeypatch.delenv("ECOM_DEBUG", raising=False)
    monkeypatch.setattr(stages, "run_stage", stream)
    capsys.readouterr()
    assert main(["gold", "--lakehouse", str(tmp_path / "lh")]) == 1
    line = _one_error_line(capsys)
    assert "ValueError: the batch's own error" in line and "Traceback (most recent call last)" not in line, line


class _JavaThrowable:
    """Stands in for a Py4J JavaObject of a Throwable: getCause() and toString(), as _java_root_cause reads them."""

    def __init__(self, text: str, cause: "_JavaThrowable | None" = None):
        self.text, self.cause = text, cause

    def getCause(self):  # noqa: N802 - the Java method's name
        return self.cause

    def toString(self):  # noqa: N802
        return self.text


@pytest.mark.parametrize(("root", "hint"), [
    ("com.amazonaws.services.glue.model.AccessDeniedException: Insufficient Lake Formation permission(s) on orders "
     "(Service: AWSGlue; Status Code: 400; Error Code: AccessDeniedException)",
     "grant the role Spark runs as CREATE_TABLE and ALTER on the silver and gold databases, and DATA_LOCATION_ACCESS"),
    ("com.amazonaws.services.s3.model.AmazonS3Exception: Access Denied (Service: Amazon S3; Status Code: 403)",
     "check its S3 policy"),
])
def test_a_refusal_names_what_to_grant(root, hint):
    from ecom_lakehouse.errors import error_line

    err = RuntimeError("An error occurred while calling o58.saveAsTable.")
    err.java_exception = _JavaThrowable("org.apache.spark.SparkException: Job aborted", _JavaThrowable(root))
    line = error_line(err)
    assert line.startswith(root) and hint in line, line
    assert line.count("(") - root.count("(") == 1  # one hint, the first that matches
