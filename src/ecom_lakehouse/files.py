"""Raw-file discovery and header checks, through Hadoop's FileSystem so that the same code
reads a local folder, ``s3://`` on EMR and ``/Volumes/...`` on Databricks."""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from ecom_lakehouse.schemas import accepted_headers, raw_names


class InputFileError(Exception):
    """A file-level problem: the run stops before any table is modified."""


@dataclass(frozen=True)
class TableSource:
    table: str
    directory: str  # what the streaming file source lists (not recursively)
    name_glob: str  # which file names in it belong to the table
    files: tuple[str, ...]
    headers: dict  # file -> list of header columns


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def exists(spark: SparkSession, path: str) -> bool:
    p, fs = _fs(spark, path)
    return fs.exists(p)


def list_csv_files(spark: SparkSession, glob: str) -> list[str]:
    p, fs = _fs(spark, glob)
    statuses = fs.globStatus(p) or []
    return sorted(s.getPath().toString() for s in statuses if s.isFile())


def first_line(spark: SparkSession, path: str) -> str | None:
    jvm = spark.sparkContext._jvm
    p, fs = _fs(spark, path)
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(fs.open(p), "UTF-8"))
    try:
        return reader.readLine()
    finally:
        reader.close()


def check_header(table: str, path: str, line: str | None) -> list[str]:
    """The file's header columns if they are an accepted version, else InputFileError."""
    if line is None:
        raise InputFileError(f"{path}: empty file, expected a CSV header for {table}")
    line = line.lstrip("\ufeff").rstrip("\r")
    if "\x00" in line or "\ufffd" in line:
        raise InputFileError(f"{path}: not a UTF-8 CSV file (binary content in the first line)")
    columns = [c.strip().strip('"') for c in line.split(",")]
    if columns in accepted_headers(table):
        return columns
    expected = raw_names(table)
    unknown = [c for c in columns if c not in expected]
    missing = [c for c in expected if c not in columns and not c.endswith("_geom")]
    if unknown or missing:
        problem = "; ".join(filter(None, [
            f"unknown columns {unknown}" if unknown else "",
            f"missing columns {missing}" if missing else "",
        ]))
    else:
        problem = "columns out of order"
    raise InputFileError(f"{path}: header does not match {table} ({problem}); expected {','.join(expected)}")


def discover(spark: SparkSession, raw_root: str, table: str) -> TableSource:
    """`<raw>/<table>.csv` or a folder `<raw>/<table>/` of CSV files, headers checked."""
    root = raw_root.rstrip("/")
    single, folder = f"{root}/{table}.csv", f"{root}/{table}"
    has_single, has_folder = exists(spark, single), exists(spark, folder)
    if has_single and has_folder:
        raise InputFileError(f"{root}: both {table}.csv and {table}/ exist; keep one of them")
    if not (has_single or has_folder):
        raise InputFileError(
            f"{single}: not found (expected {table}.csv or a folder {table}/ of CSV files under {root}; "
            f"`ecom-lakehouse generate --out {root}` writes sample data)")
    directory, name_glob = (root, f"{table}.csv") if has_single else (folder, "*.csv")
    files = list_csv_files(spark, f"{directory}/{name_glob}")
    if not files:
        raise InputFileError(f"{folder}: folder holds no .csv files")
    headers = {f: check_header(table, f, first_line(spark, f)) for f in files}
    return TableSource(table, directory, name_glob, tuple(files), headers)
