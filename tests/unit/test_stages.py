"""The stage registry: every runner (CLI, platforms through the CLI, the benchmark) gets each stage's
inputs checked, its own checks raised and its tables registered the same way."""
import pytest

from ecom_lakehouse import bronze, stages
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.reconcile import FileCheck, ReconciliationError


def test_a_bronze_reconciliation_mismatch_raises_from_the_registry_not_only_in_the_cli(monkeypatch, tmp_path):
    """The benchmark once ran bronze.run directly, and a mismatch passed there silently."""
    short = FileCheck("orders", "orders.csv", in_file=10, in_bronze=8, quarantined=1)
    monkeypatch.setattr(bronze, "run", lambda *a, **k: [bronze.BronzeResult("orders", 1, checks=[short])])
    with pytest.raises(ReconciliationError, match="orders.csv: 10 records in the file, 8 in bronze"):
        stages.run_stage("bronze", None, Lakehouse(raw=str(tmp_path), root=str(tmp_path)), echo=lambda *a, **k: None)


def test_a_stage_whose_inputs_are_missing_names_them_and_the_stage_to_run(spark, tmp_path):
    lake = Lakehouse(raw=str(tmp_path / "raw"), root=str(tmp_path / "lake"))
    with pytest.raises(stages.MissingInputError, match=r"segment needs the gold table customer_features .* "
                                                       r"run `ecom-lakehouse gold`"):
        stages.run_stage("segment", spark, lake, echo=lambda *a, **k: None)
    # a table an ML stage writes names that stage, not its layer
    with pytest.raises(stages.MissingInputError, match=r"measure needs the gold table ab_exposures .* "
                                                       r"run `ecom-lakehouse recommend`"):
        stages.run_stage("measure", spark, lake, echo=lambda *a, **k: None)


def test_the_registry_covers_every_command_the_platforms_schedule():
    assert set(stages.SCHEDULED) == set(stages.REGISTRY)
    assert stages.PIPELINE == stages.SCHEDULED[:-1] and stages.SCHEDULED[-1] == "maintain"
    # every layer a stage reads is written by a stage earlier in the pipeline
    for i, name in enumerate(stages.PIPELINE):
        for layer, _ in stages.REGISTRY[name].reads():
            assert layer in stages.PIPELINE[:i], (name, layer)
