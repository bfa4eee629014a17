"""The stages in one registry: what each reads, which layer it registers, and how it runs.

Everything that runs a stage goes through `run_stage`: the CLI (so Databricks tasks, EMR steps and EMR
Serverless job runs, which call the CLI), the benchmark and the tests. A stage's own checks raise in
its `run` (bronze's reconciliation, the recommender's leak check), so a failed check stops whatever
ran it, wherever it ran.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.contracts import STAGE_OUTPUTS, check_outputs
from ecom_lakehouse.ml import ab
from ecom_lakehouse.ml.baselines import DEFAULT_STRATEGY
from ecom_lakehouse.reconcile import ReconciliationError
from ecom_lakehouse.schemas import TABLES

Echo = Callable[..., None]


class MissingInputError(Exception):
    """A stage's input table does not exist yet."""


@dataclass(frozen=True)
class StageOptions:
    """What a stage may be told besides the lakehouse (the CLI's stage options)."""
    tables: tuple[str, ...] = TABLES  # bronze: the tables to ingest
    reset: tuple[str, ...] = ()  # bronze: tables whose stream state starts over
    data_mode: str = "auto"  # recommend: "faithful" (the real data's signal), "taste" (planted) or "auto" (the data says)
    default_strategy: str = DEFAULT_STRATEGY  # recommend: what serves unless another strategy is promoted
    control_share: float = ab.CONTROL_SHARE  # recommend: the A/B hold-out's control arm, a share of the users
    control_serves: str = ab.CONTROL_SERVES[0]  # recommend: what control is shown, "default" or "nothing"
    retain_hours: int = 168  # maintain: VACUUM's retention


@dataclass(frozen=True)
class Stage:
    name: str
    reads: Callable[[], tuple[tuple[str, str], ...]]  # (layer, table) that must exist before it starts
    registers: str | None  # the layer whose tables are registered in the catalog after it ran
    run: Callable[[SparkSession, Lakehouse, StageOptions, Echo], object]
    outputs: Callable[[], tuple[str, ...]] = tuple  # gold tables whose contracts (contracts.py) it must keep


def _bronze(spark, lake, options, echo):
    from ecom_lakehouse import bronze
    from ecom_lakehouse.summary import print_reconciliation

    result = bronze.run(spark, lake, tuple(dict.fromkeys([*options.tables, *options.reset])), options.reset, echo=echo)
    if not print_reconciliation(result, echo=echo):
        raise ReconciliationError("bronze reconciliation failed: " + "; ".join(
            str(c) for r in result for c in r.checks if not c.ok))
    return result


def _silver(spark, lake, options, echo):
    from ecom_lakehouse import silver

    return silver.run(spark, lake, echo=echo)


def _gold(spark, lake, options, echo):
    from ecom_lakehouse import gold

    return gold.run(spark, lake, echo=echo)


def _segment(spark, lake, options, echo):
    from ecom_lakehouse.ml import segmentation

    return segmentation.run(spark, lake, echo=echo)


def _recommend(spark, lake, options, echo):
    from ecom_lakehouse.ml import recommend

    return recommend.run(spark, lake, data_mode=options.data_mode, echo=echo, default=options.default_strategy,
                         control_share=options.control_share, control_serves=options.control_serves)


def _measure(spark, lake, options, echo):
    return ab.run(spark, lake, echo=echo)


def _report(spark, lake, options, echo):
    from ecom_lakehouse import report

    return report.publish(spark, lake, echo=echo)


def _maintain(spark, lake, options, echo):
    from ecom_lakehouse import maintain

    return maintain.run(spark, lake, options.retain_hours, echo=echo)


def _gold_inputs():
    from ecom_lakehouse import gold

    return tuple(("silver", t) for t in gold.INPUTS)


def _gold_output_names():
    from ecom_lakehouse import gold

    return gold.OUTPUTS


def _gold_outputs():
    return tuple(("gold", t) for t in _gold_output_names())


REGISTRY: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("bronze", lambda: (), None, _bronze),
    Stage("silver", lambda: tuple(("bronze", t) for t in TABLES), "silver", _silver),
    Stage("gold", _gold_inputs, "gold", _gold, _gold_output_names),
    Stage("segment", lambda: (("gold", "customer_features"),
                              *(("silver", t) for t in ("users", "order_items", "products", "inventory_items"))),
          "gold", _segment, lambda: STAGE_OUTPUTS["segment"]),
    Stage("recommend", lambda: tuple(("silver", t) for t in ("order_items", "users", "products")), "gold", _recommend,
          lambda: STAGE_OUTPUTS["recommend"]),
    Stage("measure", lambda: (("gold", "ab_exposures"), ("silver", "order_items")), "gold", _measure,
          lambda: STAGE_OUTPUTS["measure"]),
    Stage("report", _gold_outputs, None, _report),
    Stage("maintain", lambda: (), None, _maintain),
)}
PIPELINE = ("bronze", "silver", "gold", "segment", "recommend", "measure", "report")  # what `run` runs
SCHEDULED = (*PIPELINE, "maintain")  # what the platforms schedule: Databricks tasks, EMR steps
# What one EMR step or EMR Serverless job run may run: `run`, the whole pipeline in one driver, or a stage alone.
COMMANDS = ("run", *SCHEDULED)
ML_STAGES = ("segment", "recommend")


def producer(layer: str, name: str) -> str:
    """The stage that writes a table: the one whose outputs name it, else its layer's stage."""
    return next((s.name for s in REGISTRY.values() if layer == "gold" and name in s.outputs()), layer)


def require_inputs(spark: SparkSession, lake: Lakehouse, stage: str) -> None:
    for layer, name in REGISTRY[stage].reads():
        table = lake.table(layer, name)
        if not table.exists(spark):
            raise MissingInputError(f"{stage} needs the {layer} table {name} ({table}), which does not exist yet: "
                                    f"run `ecom-lakehouse {producer(layer, name)}` with the same --lakehouse first")


def run_stage(name: str, spark: SparkSession, lake: Lakehouse, options: StageOptions = StageOptions(),
              echo: Echo = print) -> object:
    """Check the inputs, run the stage, check its outputs' contracts, register what it wrote; progress
    lines through `echo`."""
    stage = REGISTRY[name]
    echo(f"[{name}]", flush=True)
    started = time.time()
    require_inputs(spark, lake, name)
    result = stage.run(spark, lake, options, echo)
    check_outputs(spark, lake, stage.outputs())
    if stage.registers:
        for table in lake.register_tables(spark, stage.registers):
            echo(f"  registered {table}")
    echo(f"[{name}] done in {time.time() - started:.1f}s", flush=True)
    return result
