"""The local session's settings, read without starting one."""
from ecom_lakehouse.session import local_settings


def test_shuffle_partitions_follow_the_data_unless_a_test_fixes_them():
    settings = local_settings({})
    # No fixed count: Spark's 200, merged by AQE into partitions of at most 64 MB. A fixed 8 ran
    # silver out of the default 1 GB heap at scale 10 (README, Performance).
    assert "spark.sql.shuffle.partitions" not in settings
    assert settings["spark.sql.adaptive.enabled"] == settings["spark.sql.adaptive.coalescePartitions.enabled"] == "true"
    assert "spark.driver.memory" not in settings  # the default heap, the one the benchmark measures against
    fixed = local_settings({"ECOM_SHUFFLE_PARTITIONS": "2", "ECOM_DRIVER_MEMORY": "2g"})
    assert (fixed["spark.sql.shuffle.partitions"], fixed["spark.driver.memory"]) == ("2", "2g")
