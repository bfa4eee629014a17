"""Bronze on the real thelook exports in ../shared: the 2025 export lands whole, and the Italian-locale
export's mangled numbers and dates are quarantined, never silently wrong."""
from pyspark.sql import functions as F

from ecom_lakehouse import bronze
from ecom_lakehouse.config import Lakehouse
from tests.conftest import shared_path

REAL_2025_TABLES = ("distribution_centers", "events", "inventory_items", "order_items", "products", "users")


def _data_rows(path):
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()[1:] if line)


def test_real_2025_export_ingests_with_nothing_quarantined(spark, tmp_path):
    real = shared_path("real_export_2025")
    lake = Lakehouse(raw=str(real), root=str(tmp_path / "lh"))
    results = bronze.run(spark, lake, REAL_2025_TABLES)
    for res in results:
        expected = _data_rows(real / f"{res.table}.csv")
        assert res.total("in_file") == expected
        assert res.total("quarantined") == 0
        assert lake.table("bronze", res.table).read(spark).count() == expected
    assert lake.quarantine("bronze").read(spark).count() == 0
    # both header versions: the 2025 users file carries user_geom, and it is kept
    assert lake.table("bronze", "users").read(spark).where(F.col("user_geom").isNull()).count() == 0


def test_italian_locale_export_gives_no_silently_wrong_numbers(spark, tmp_path):
    it = shared_path("real_export_2023_it_locale")
    lake = Lakehouse(raw=str(it), root=str(tmp_path / "lh"))
    results = bronze.run(spark, lake, ("products", "orders", "distribution_centers"))
    for res in results:
        assert res.total("in_file") == _data_rows(it / f"{res.table}.csv")
        assert all(c.ok for c in res.checks)
    q = lake.quarantine("bronze").read(spark)
    # every decimal-comma price and every DD/MM/YYYY timestamp is caught, with the value in the reason
    assert q.where(F.col("reason").contains("unparseable double in cost: '")).count() > 0
    assert q.where(F.col("reason").contains("unparseable timestamp in created_at: '")).count() > 0
    products = lake.table("bronze", "products").read(spark)
    assert products.where(F.col("cost").contains(",")).count() == 0  # nothing mangled got through
