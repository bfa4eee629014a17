"""Raw-file discovery, header checks and record counts, and the lakehouse's few plain files (checkpoints,
the report, an MLflow store): a local folder, ``s3://`` on EMR and ``/Volumes/...`` on Databricks alike,
on classic compute and over Spark Connect (see "storage" below).

Paths are kept in Hadoop's decoded form (``file:/raw/orders/orders (1).csv``). Spark's file
sources report a file as a URI (``…/orders%20(1).csv``); :func:`decoded_file_path` turns it
back, so a file name with spaces, ``%``, ``#`` or accents matches on both sides.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
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
    '+' literal and encodes '%' as %25, so protecting '+' from url_decode makes this exact. A volume's
    file is named by its /Volumes path, with or without the `dbfs:` Databricks may put in front."""
    return F.regexp_replace(F.url_decode(F.replace(uri, F.lit("+"), F.lit("%2B"))), VOLUME_URI.pattern, "")


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


# --- storage: a mounted file system through Python, object storage through Hadoop ------------------
#
# Local disk and Unity Catalog volumes are file systems the driver can open (a volume is a FUSE mount at
# /Volumes on every Databricks compute: dedicated, standard and serverless), so they are read with Python's
# own file API, which Spark Connect leaves alone. Object-store URIs (s3:// on EMR, dbfs:, abfss://) are only
# reachable through Hadoop's FileSystem in the driver's JVM: the one place this package touches the JVM
# (`_hadoop`), and only classic compute has one. EMR, the only place lakes live on such URIs, is classic.

@dataclass(frozen=True)
class FileStatus:
    path: str  # as bronze stores it: Hadoop's decoded form (`file:/raw/orders (1).csv`, `s3://b/k`, `/Volumes/...`)
    size: int
    modified_ms: int
    is_dir: bool

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


FILE_SCHEME = re.compile(r"^file:(//)?")
VOLUME_URI = re.compile(r"^dbfs:(?=/Volumes/)")


def mounted(path: str) -> Path | None:
    """Where `path` is on a file system this process can open, or None for an object-store URI."""
    if FILE_SCHEME.match(path):
        return Path(FILE_SCHEME.sub("", path))
    if VOLUME_URI.match(path):
        return Path(VOLUME_URI.sub("", path))
    return None if re.match(r"^[a-zA-Z][\w+.-]*:", path) else Path(os.path.abspath(path))


def qualified_name(local: Path) -> str:
    """A mounted path as Spark's file sources name it once decoded: `file:` + the absolute path on local
    disk. A volume's path is kept as it is (`/Volumes/...`): Databricks may report it with `dbfs:` in front,
    which `decoded_file_path` removes, so both sides name a volume's file alike."""
    text = str(local)
    return text if text.startswith("/Volumes/") else f"file:{text}"


def _local_status(local: Path) -> FileStatus:
    stat = local.stat()
    # Java's File.lastModified, which Hadoop's local file system reports: whole milliseconds, truncated.
    return FileStatus(qualified_name(local), 0 if local.is_dir() else stat.st_size, stat.st_mtime_ns // 1_000_000,
                      local.is_dir())


def _hadoop(spark: SparkSession, path: str):
    """(Hadoop Path, its FileSystem) for an object-store URI, from the driver's JVM."""
    from ecom_lakehouse.session import is_connect

    if is_connect(spark):
        raise InputFileError(f"{path}: Spark Connect cannot reach object storage from the driver; use a volume "
                             "path (/Volumes/...) or run on classic compute")
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(folder_path(path))
    return p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _hadoop_status(s) -> FileStatus:
    return FileStatus(s.getPath().toString(), s.getLen(), s.getModificationTime(), s.isDirectory())


def exists(spark: SparkSession, path: str) -> bool:
    local = mounted(path)
    if local is not None:
        return local.exists()
    p, fs = _hadoop(spark, path)
    return bool(fs.exists(p))


def list_status(spark: SparkSession, path: str) -> list[FileStatus]:
    """What is directly under the folder `path`, sorted by path; nothing when it does not exist."""
    local = mounted(path)
    if local is not None:
        return sorted((_local_status(c) for c in local.iterdir()), key=lambda s: s.path) if local.is_dir() else []
    p, fs = _hadoop(spark, path)
    return sorted((_hadoop_status(s) for s in fs.listStatus(p)), key=lambda s: s.path) if fs.exists(p) else []


def subfolders(spark: SparkSession, path: str) -> list[str]:
    """Names of the folders directly under `path`, sorted; none when it does not exist."""
    return sorted(s.name for s in list_status(spark, path) if s.is_dir)


def delete(spark: SparkSession, path: str) -> bool:
    """Recursive delete; True if something was there."""
    local = mounted(path)
    if local is None:
        p, fs = _hadoop(spark, path)
        return bool(fs.delete(p, True))
    if local.is_dir():
        shutil.rmtree(local)
    elif local.exists():
        local.unlink()
    else:
        return False
    return True


def list_files(spark: SparkSession, directory: str, name_glob: str = "*") -> list[FileStatus]:
    """The files directly in `directory` whose names match `name_glob` (`*`, `?`), sorted by path."""
    return [s for s in list_status(spark, directory) if not s.is_dir and fnmatch.fnmatchcase(s.name, name_glob)]


def file_status(spark: SparkSession, path: str) -> FileStatus | None:
    """One file's status, or None when it is not there (any more)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return next((s for s in list_status(spark, parent or "/") if s.name == name and not s.is_dir), None)


def first_line(spark: SparkSession, path: str) -> str | None:
    """The file's first line without its line break (None: empty file); bytes that are not UTF-8 read
    as U+FFFD, as Java's decoder reads them."""
    local = mounted(path)
    if local is not None:
        with local.open(encoding="utf-8", errors="replace", newline="") as f:
            line = f.readline()
        return line.rstrip("\r\n") if line else None
    jvm = spark.sparkContext._jvm
    p, fs = _hadoop(spark, path)
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(fs.open(p), "UTF-8"))
    try:
        return reader.readLine()
    finally:
        reader.close()


def upload_folder(spark: SparkSession, local_dir: Path, target: str) -> None:
    """Copy a local folder's files (the report, an MLflow store) to a lakehouse path (S3 or a volume), file
    by file: what is there already and not in `local_dir` stays, a file of the same name is replaced.
    On S3 with Hadoop's FileUtil.copy (a plain create + stream): S3A 3.3.4's copyFromLocalFile fails on
    /tmp files ("Cannot get relative path for URI"; found by the EMR twin)."""
    sources = sorted(p for p in local_dir.rglob("*") if p.is_file())
    destination = mounted(target)
    if destination is not None:
        for f in sources:
            copy = destination / f.relative_to(local_dir)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, copy)
        return
    jvm, conf = spark.sparkContext._jvm, spark.sparkContext._jsc.hadoopConfiguration()
    local_fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf).getRawFileSystem()
    dest, fs = _hadoop(spark, target)
    for f in sources:
        jvm.org.apache.hadoop.fs.FileUtil.copy(local_fs, jvm.org.apache.hadoop.fs.Path(str(f.resolve())), fs,
                                               jvm.org.apache.hadoop.fs.Path(dest, f.relative_to(local_dir).as_posix()),
                                               False, True, conf)


def download_folder(spark: SparkSession, source: str, local_dir: Path) -> None:
    """Copy a lakehouse folder's files to a local folder, file by file (nothing when it does not exist)."""
    origin = mounted(source)
    if origin is not None:
        if origin.is_dir():
            shutil.copytree(origin, local_dir, dirs_exist_ok=True)
        return
    jvm, conf = spark.sparkContext._jvm, spark.sparkContext._jsc.hadoopConfiguration()
    # Hadoop's checksummed local file system would write a `.<name>.crc` beside each file, which MLflow's
    # store reads as one of its own; its raw file system writes none.
    local_fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf).getRawFileSystem()
    src, fs = _hadoop(spark, source)
    if not fs.exists(src):
        return
    prefix = fs.makeQualified(src).toString().rstrip("/") + "/"
    found = fs.listFiles(src, True)  # one flat listing on S3
    while found.hasNext():
        path = found.next().getPath()
        relative = path.toString()[len(prefix):]
        jvm.org.apache.hadoop.fs.FileUtil.copy(fs, path, local_fs, jvm.org.apache.hadoop.fs.Path(
            str((local_dir / relative).resolve())), False, True, conf)


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
    statuses = list_files(spark, directory, name_glob)
    if not statuses:
        raise InputFileError(f"{folder}: folder holds no .csv files")
    found = []
    for s in statuses:
        path = s.path
        if GLOB_CHARACTERS.search(s.name):
            # Measured on Spark 3.5.6: one such name in a micro-batch makes the file source read every
            # other file of the batch twice. Refuse it rather than double rows.
            raise InputFileError(f"{path}: file names with glob characters (* ? [ ] {{ }} \\) are "
                                 f"misread by Spark's streaming file source; rename the file")
        found.append(RawFile(path, s.size, s.modified_ms,
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
