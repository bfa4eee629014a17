"""Raw-file discovery, header checks and record counts, through Hadoop's FileSystem so that the
same code reads a local folder, ``s3://`` on EMR and ``/Volumes/...`` on Databricks.

Paths are kept in Hadoop's decoded form (``file:/raw/orders/orders (1).csv``). Spark's file
sources report a file as a URI (``…/orders%20(1).csv``); :func:`decoded_file_path` turns it
back, so a file name with spaces, ``%``, ``#`` or accents matches on both sides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse.schemas import accepted_headers, raw_names


class InputFileError(Exception):
    """A file-level problem: the run stops before any table is modified."""


@dataclass(frozen=True)
class RawFile:
    path: str  # Hadoop's decoded path string, what bronze stores in _source_file
    size: int
    modified_ms: int
    columns: tuple[str, ...]  # the file's header: one of the table's accepted versions

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class TableSource:
    table: str
    directory: str  # what the streaming file source lists (not recursively)
    name_glob: str  # which file names in it belong to the table
    files: tuple[RawFile, ...]

    def header_by_name(self) -> dict[str, tuple[str, ...]]:
        """File name -> header columns. Names are unique: every file of a table is in `directory`."""
        return {f.name: f.columns for f in self.files}


def decoded_file_path(uri: Column) -> Column:
    """A file source's URI (``_metadata.file_path``) -> Hadoop's decoded path string. A URI keeps
    '+' literal and encodes '%' as %25, so protecting '+' from url_decode makes this exact."""
    return F.url_decode(F.replace(uri, F.lit("+"), F.lit("%2B")))


def file_name(path: Column) -> Column:
    return F.substring_index(path, "/", -1)


GLOB_CHARACTERS = re.compile(r"[\\*?\[\]{}]")


def literal_path(path: str) -> str:
    """A path Spark's readers take literally: glob characters in file names escaped."""
    return GLOB_CHARACTERS.sub(lambda m: "\\" + m.group(0), path)


def folder_path(path: str) -> str:
    """A folder as Hadoop takes it: a bucket itself needs its slash (`s3://bucket/`), S3A refuses
    the empty path of `s3://bucket` ("path must be absolute")."""
    scheme, sep, rest = path.partition("://")
    return f"{path}/" if sep and "/" not in rest else path


def hadoop_fs(spark: SparkSession, path: str):
    """(Hadoop Path, its FileSystem): local disk, s3:// or a volume alike."""
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(folder_path(path))
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _without_checksums(fs):
    """Hadoop's local file system writes a `.<name>.crc` beside each file it writes, which MLflow's
    file store would read as one of its own files; its raw file system writes none."""
    return fs.getRawFileSystem() if fs.getUri().getScheme() == "file" else fs


def upload_folder(spark: SparkSession, local_dir: Path, target: str) -> None:
    """Copy a local folder's files (the report, an MLflow store) to a lakehouse path (S3 or a volume) via
    Hadoop FS, file by file: what is there already and not in `local_dir` stays, a file of the same
    name is replaced (FileUtil.copy of a folder onto an existing one would nest it). With FileUtil.copy
    (a plain create + stream): S3A 3.3.4's copyFromLocalFile fails on /tmp files ("Cannot get relative
    path for URI"; found by the EMR twin)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    local_fs = _without_checksums(jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf))
    dest, fs = hadoop_fs(spark, target)
    fs = _without_checksums(fs)
    for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        jvm.org.apache.hadoop.fs.FileUtil.copy(local_fs, jvm.org.apache.hadoop.fs.Path(str(f.resolve())), fs,
                                               jvm.org.apache.hadoop.fs.Path(dest, f.relative_to(local_dir).as_posix()),
                                               False, True, conf)


def download_folder(spark: SparkSession, source: str, local_dir: Path) -> None:
    """Copy a lakehouse folder's files to a local folder, file by file (nothing when it does not exist)."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    local_fs = _without_checksums(jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf))
    src, fs = hadoop_fs(spark, source)
    if not fs.exists(src):
        return
    fs = _without_checksums(fs)
    prefix = fs.makeQualified(src).toString().rstrip("/") + "/"
    files = fs.listFiles(src, True)  # one flat listing on S3
    while files.hasNext():
        path = files.next().getPath()
        relative = path.toString()[len(prefix):]
        jvm.org.apache.hadoop.fs.FileUtil.copy(fs, path, local_fs, jvm.org.apache.hadoop.fs.Path(
            str((local_dir / relative).resolve())), False, True, conf)


def exists(spark: SparkSession, path: str) -> bool:
    p, fs = hadoop_fs(spark, path)
    return fs.exists(p)


def subfolders(spark: SparkSession, path: str) -> list[str]:
    """Names of the folders directly under `path`, sorted; none when it does not exist."""
    p, fs = hadoop_fs(spark, path)
    return sorted(s.getPath().getName() for s in fs.listStatus(p) if s.isDirectory()) if fs.exists(p) else []


def delete(spark: SparkSession, path: str) -> bool:
    """Recursive delete; True if something was there."""
    p, fs = hadoop_fs(spark, path)
    return bool(fs.delete(p, True))


def list_csv_files(spark: SparkSession, glob: str) -> list:
    """FileStatus of every file matching `glob`, sorted by path."""
    p, fs = hadoop_fs(spark, glob)
    statuses = fs.globStatus(p) or []
    return sorted((s for s in statuses if s.isFile()), key=lambda s: s.getPath().toString())


def first_line(spark: SparkSession, path: str) -> str | None:
    jvm = spark.sparkContext._jvm
    p, fs = hadoop_fs(spark, path)
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
    if not exists(spark, root):
        raise InputFileError(f"{root}: raw folder not found (`ecom-lakehouse generate --out {root}` writes sample data)")
    single, folder = f"{root}/{table}.csv", f"{root}/{table}"
    has_single, has_folder = exists(spark, single), exists(spark, folder)
    if has_single and has_folder:
        raise InputFileError(f"{root}: both {table}.csv and {table}/ exist; keep one of them")
    if not (has_single or has_folder):
        raise InputFileError(
            f"{single}: not found (expected {table}.csv or a folder {table}/ of CSV files under {root}; "
            f"`ecom-lakehouse generate --out {root}` writes sample data)")
    directory, name_glob = (root, f"{table}.csv") if has_single else (folder, "*.csv")
    statuses = list_csv_files(spark, f"{literal_path(directory)}/{name_glob}")
    if not statuses:
        raise InputFileError(f"{folder}: folder holds no .csv files")
    found = []
    for s in statuses:
        path = s.getPath().toString()
        if GLOB_CHARACTERS.search(s.getPath().getName()):
            # Measured on Spark 3.5.6: one such name in a micro-batch makes the file source read every
            # other file of the batch twice. Refuse it rather than double rows.
            raise InputFileError(f"{path}: file names with glob characters (* ? [ ] {{ }} \\) are "
                                 f"misread by Spark's streaming file source; rename the file")
        found.append(RawFile(path, s.getLen(), s.getModificationTime(),
                             tuple(check_header(table, path, first_line(spark, path)))))
    return TableSource(table, directory, name_glob, tuple(found))


def check_unchanged(source: TableSource, ingested: dict[str, tuple[int, int]]) -> None:
    """InputFileError for a file that was ingested with another size or modification time: the
    streaming source never reads a path twice, so new content under an old name would be lost."""
    for f in source.files:
        before = ingested.get(f.path)
        if before and before != (f.size, f.modified_ms):
            raise InputFileError(
                f"{f.path}: changed since bronze ingested it ({before[0]:,} -> {f.size:,} bytes); bronze never "
                f"re-reads a file: deliver new data under a new file name, or re-ingest the table with "
                f"`ecom-lakehouse bronze --reset {source.table}`")


def count_records(spark: SparkSession, paths: list[str]) -> dict[str, int]:
    """Data records (lines after the header) per file, by a read of its own of the files as stored."""
    if not paths:
        return {}
    lines = (spark.read.text([literal_path(p) for p in paths])
             .groupBy(decoded_file_path(F.col("_metadata.file_path")).alias("path")).count()
             .collect())  # one row per file
    counted = {r["path"]: r["count"] - 1 for r in lines}
    return {p: counted.get(p, 0) for p in paths}
