"""Output contracts: each promise is checked against the table as written, and each fails when broken."""
import pytest

from ecom_lakehouse import contracts, stages
from ecom_lakehouse.config import Lakehouse

SERVED = "user_id long, rank int, product_id long, strategy string, arm string"


@pytest.fixture
def lake(spark, tmp_path):
    lake = Lakehouse(raw=str(tmp_path / "raw"), root=str(tmp_path / "lake"))
    lake.table("silver", "users").overwrite(spark.createDataFrame([(1,), (2,)], "id long"))
    lake.table("silver", "products").overwrite(spark.createDataFrame([(10,), (11,)], "id long"))
    return lake


def test_a_table_keeping_its_contract_passes(spark, lake):
    served = spark.createDataFrame([(1, 1, 10, "popularity", "control"), (1, 2, 11, "popularity", "control"),
                                    (2, 1, 10, "als", "treatment")], SERVED)
    lake.table("gold", "served_recommendations").overwrite(served)
    assert contracts.broken_promises(spark, lake, "served_recommendations") == []


def test_a_duplicate_key_a_null_and_an_orphan_are_each_named(spark, lake):
    served = spark.createDataFrame([(1, 1, 10, "popularity", "control"), (1, 1, 11, "popularity", "control"),  # (1, 1) twice
                                    (2, 1, None, "als", "treatment"),  # no product
                                    (3, 1, 99, "als", "treatment")], SERVED)  # user 3 and product 99 do not exist
    lake.table("gold", "served_recommendations").overwrite(served)
    broken = contracts.broken_promises(spark, lake, "served_recommendations")
    assert broken == ["key (user_id, rank) is not unique: 2 rows share one", "product_id is null in 1 rows",
                      "user_id: 1 values not in silver users.id", "product_id: 1 values not in silver products.id"]
    with pytest.raises(contracts.ContractBroken, match="gold served_recommendations: key"):
        contracts.check_outputs(spark, lake, ["served_recommendations"])


def test_every_gold_and_ml_output_has_a_contract_that_its_stage_checks():
    declared = {name for stage in stages.REGISTRY.values() for name in stage.outputs()}
    assert declared == set(contracts.CONTRACTS)
