"""Bronze's Auto Loader path, as far as it runs off Databricks: the options it is given, and the file
paths it reports, which bronze's reconciliation must match against the files it listed."""
from pyspark.sql import functions as F

from ecom_lakehouse import bronze, files
from ecom_lakehouse.config import Lakehouse

# Option names from Databricks' "Auto Loader options" page
# (docs.databricks.com/ingestion/cloud-object-storage/auto-loader/options.html): common Auto Loader
# options, and the generic file-format options Auto Loader also takes.
DOCUMENTED = {"cloudFiles.allowOverwrites", "cloudFiles.backfillInterval", "cloudFiles.format",
              "cloudFiles.includeExistingFiles", "cloudFiles.inferColumnTypes", "cloudFiles.maxBytesPerTrigger",
              "cloudFiles.maxFileAge", "cloudFiles.maxFilesPerTrigger", "cloudFiles.partitionColumns",
              "cloudFiles.schemaEvolutionMode", "cloudFiles.schemaHints", "cloudFiles.schemaLocation",
              "cloudFiles.useNotifications", "cloudFiles.validateOptions", "ignoreCorruptFiles", "ignoreMissingFiles",
              "modifiedAfter", "modifiedBefore", "pathGlobFilter", "recursiveFileLookup"}
TEXT_FORMATS = {"avro", "binaryFile", "csv", "json", "orc", "parquet", "text", "xml"}


def test_auto_loader_gets_only_documented_options(monkeypatch):
    monkeypatch.delenv("ECOM_RAW_STREAM", raising=False)
    lake = Lakehouse(env="databricks", root="/Volumes/main/s/lakehouse", catalog="main", schema="s")
    source_format, options = bronze.raw_stream_source(lake, "*.csv")
    assert source_format == "cloudFiles"
    assert set(options) <= DOCUMENTED, set(options) - DOCUMENTED
    assert options["cloudFiles.format"] in TEXT_FORMATS and options["pathGlobFilter"] == "*.csv"
    # off Databricks, and in the twin: Spark's own file source, with the same file filter
    assert bronze.raw_stream_source(Lakehouse(root="/tmp/lake"), "orders.csv") == ("text", {"pathGlobFilter": "orders.csv"})


def test_a_volume_file_as_auto_loader_reports_it_is_the_file_bronze_listed(spark):
    """On a volume, `_metadata.file_path` is a dbfs:/Volumes/... URI, percent-encoded; bronze lists the
    volume as the file system it is mounted as (/Volumes/...). Reconciliation joins on the two, so they must
    be equal."""
    name = "orders (1)+100%.csv"
    listed = files.qualified_name(files.mounted(f"/Volumes/main/s/lakehouse/raw/orders/{name}"))
    reported = f"dbfs:/Volumes/main/s/lakehouse/raw/orders/{name.replace('%', '%25').replace(' ', '%20')}"
    decoded = spark.range(1).select(files.decoded_file_path(F.lit(reported)).alias("path")).first()["path"]
    assert decoded == listed == f"/Volumes/main/s/lakehouse/raw/orders/{name}"
    # a local file keeps its scheme on both sides
    local = spark.range(1).select(files.decoded_file_path(F.lit("file:/tmp/raw/orders%20(1).csv"))).first()[0]
    assert local == files.qualified_name(files.mounted("/tmp/raw/orders (1).csv")) == "file:/tmp/raw/orders (1).csv"
