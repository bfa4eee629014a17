"""Where files.py reads a path: through Python's file API when the path is on a file system this process can
open (local disk; a Unity Catalog volume, mounted at /Volumes on every Databricks compute), through Hadoop's
FileSystem in the JVM for an object-store URI, which Spark Connect has no way to reach."""
import os
from pathlib import Path

import pytest

from ecom_lakehouse import files


@pytest.mark.parametrize("path, local", [
    ("data/raw", Path(os.path.abspath("data/raw"))),
    ("/tmp/raw/orders (1).csv", Path("/tmp/raw/orders (1).csv")),
    ("file:/tmp/raw", Path("/tmp/raw")),
    ("file:///tmp/raw", Path("/tmp/raw")),
    ("/Volumes/main/s/lakehouse/raw", Path("/Volumes/main/s/lakehouse/raw")),
    ("dbfs:/Volumes/main/s/lakehouse/raw", Path("/Volumes/main/s/lakehouse/raw")),
    ("s3://lake-raw/raw", None),
    ("s3a://lake-raw/raw", None),
    ("dbfs:/FileStore/raw", None),
    ("abfss://c@account.dfs.core.windows.net/raw", None),
])
def test_mounted_paths_are_opened_by_python_and_uris_left_to_hadoop(path, local):
    assert files.mounted(path) == local


def test_a_local_listing_names_files_as_hadoop_does_with_their_size_and_time(tmp_path):
    """Bronze stores these (path, size, modification time) and compares them on every run: they must be
    what the listing through Hadoop's local file system gave (its path string, Java's whole milliseconds)."""
    (tmp_path / "orders").mkdir()
    data = tmp_path / "orders" / "orders (1)+100%.csv"
    data.write_text("order_id\n1\n")
    os.utime(data, ns=(1_700_000_000_123_756_789, 1_700_000_000_123_756_789))
    [status] = files.list_files(None, str(tmp_path / "orders"), "*.csv")
    assert (status.path, status.size, status.modified_ms, status.is_dir) == (
        f"file:{data}", 11, 1_700_000_000_123, False)
    assert files.list_files(None, str(tmp_path / "orders"), "orders.csv") == []
    assert files.file_status(None, status.path) == status and files.file_status(None, f"file:{tmp_path}/gone.csv") is None
    assert files.subfolders(None, str(tmp_path)) == ["orders"] and files.subfolders(None, str(tmp_path / "none")) == []


@pytest.mark.parametrize("content, line", [
    (b"id,name\r\n1,a\r\n", "id,name"),
    (b"id,name\n", "id,name"),
    (b"id,name", "id,name"),
    (b"\n1\n", ""),
    (b"", None),
    (b"\xff\xfeid\n", "\ufffd\ufffdid"),
])
def test_first_line_reads_as_javas_buffered_reader_does(spark, tmp_path, content, line):
    """BufferedReader.readLine over a UTF-8 decoder, what Hadoop's path read: the line without \\r\\n, None
    for an empty file, U+FFFD for bytes that are not UTF-8 (bronze's header check refuses those)."""
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    jvm = spark.sparkContext._jvm
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(jvm.java.io.FileInputStream(str(path)), "UTF-8"))
    try:
        assert files.first_line(None, str(path)) == line == reader.readLine()
    finally:
        reader.close()
