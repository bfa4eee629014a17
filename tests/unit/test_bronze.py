"""Bronze ingestion on hand-made files: bad input, exactly-once reruns, incremental pickup (the real
exports: tests/integration/test_real_exports.py)."""
import pytest

from ecom_lakehouse import bronze
from ecom_lakehouse.cli import main
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import raw_names


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


USERS_HEADER = ",".join(raw_names("users")[:-1])  # the older header, without user_geom
GOOD = "1,Ann,Lee,ann@example.com,30,F,Acre,1 Main St,69980-000,null,Brasil,-8.1,-72.9,Search,2022-11-05 01:54:00 UTC"


def test_lines_lose_a_leading_bom_and_a_trailing_cr_so_the_header_is_recognised(spark):
    header = ",".join(raw_names("users"))
    lines = spark.createDataFrame([("\ufeff" + header + "\r", "/raw/users.csv"), ("1,a\r", "/raw/users.csv"),
                                   ("2,b", "/raw/users.csv")], "value string, _source_file string")
    tagged = bronze.tag_lines(lines, {"users.csv": tuple(raw_names("users"))}, "users")
    rows = [(r[bronze.LINE], r[bronze.IS_HEADER], r[bronze.VARIANT]) for r in tagged.collect()]
    assert rows == [(header, True, 0), ("1,a", False, 0), ("2,b", False, 0)]


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(spark, tmp_path):
    raw = tmp_path / "raw"
    _write(raw / "users" / "part-1.csv", [
        USERS_HEADER, GOOD,
        "2,Bob,Ray,bob@example.com,41,M,Acre,2 Main St,69980-000",  # too few fields
        '3,"Cy,Ro,cy@example.com,22,M,Acre,3 Main St,69980-000,X,Brasil,1,2,Search,2022-11-05 01:54:00 UTC',  # broken quote
        "4,Di,Ng,di@example.com,forty,F,Acre,4 Main St,69980-000,X,Brasil,1,2,Search,2022-11-05 01:54:00 UTC",  # bad int
        "5,Ed,Ko,ed@example.com,50,M,Acre,5 Main St,69980-000,X,Brasil,1,2,Search,05/11/2022 1.54.00",  # bad timestamp
    ])
    lake = Lakehouse(raw=str(raw), root=str(tmp_path / "lh"))
    [res] = bronze.run(spark, lake, ("users",))
    assert (res.total("in_file"), res.total("in_bronze"), res.total("quarantined")) == (5, 1, 4)
    reasons = {r["record"][:1]: r["reason"] for r in lake.quarantine("bronze").read(spark).collect()}
    assert "malformed CSV record" in reasons["2"]
    assert "malformed CSV record" in reasons["3"]
    assert reasons["4"] == "unparseable int in age: 'forty'"
    assert reasons["5"] == "unparseable timestamp in created_at: '05/11/2022 1.54.00'"
    assert {r["source_table"] for r in lake.quarantine("bronze").read(spark).collect()} == {"users"}


def test_a_batch_killed_after_its_bronze_append_lands_its_quarantine_once_on_the_rerun(spark, tmp_path, monkeypatch):
    """The replayed batch's bronze append is skipped by Delta (same transaction), so nothing is observed
    of its rows: its quarantined rows must still be written, and its good rows not twice."""
    raw = tmp_path / "raw"
    _write(raw / "users" / "part-1.csv", [USERS_HEADER, GOOD, "2,Bob,Ray,bob@example.com,41,M,Acre,2 Main St,69980-000"])
    lake = Lakehouse(raw=str(raw), root=str(tmp_path / "lh"))
    append = bronze._idempotent_append

    def killed_before_the_quarantine(df, table, app_id, version):
        if app_id.startswith("bronze-quarantine-"):
            raise RuntimeError("killed")
        append(df, table, app_id, version)

    monkeypatch.setattr(bronze, "_idempotent_append", killed_before_the_quarantine)
    with pytest.raises(Exception, match="killed"):
        bronze.run(spark, lake, ("users",))
    assert lake.table("bronze", "users").read(spark).count() == 1  # the append before the kill landed
    monkeypatch.setattr(bronze, "_idempotent_append", append)
    [rerun] = bronze.run(spark, lake, ("users",))
    assert [c.source_file.rsplit("/", 1)[-1] for c in rerun.checks] == ["part-1.csv"]
    assert (rerun.total("in_file"), rerun.total("in_bronze"), rerun.total("quarantined")) == (2, 1, 1)
    assert lake.table("bronze", "users").read(spark).count() == 1
    assert lake.quarantine("bronze").read(spark).count() == 1


def test_rerun_adds_nothing_and_a_new_file_is_ingested_once(spark, tmp_path):
    raw = tmp_path / "raw"
    _write(raw / "users" / "part-1.csv", [USERS_HEADER, GOOD])
    lake = Lakehouse(raw=str(raw), root=str(tmp_path / "lh"))
    bronze.run(spark, lake, ("users",))
    [rerun] = bronze.run(spark, lake, ("users",))
    assert rerun.ingested == [] and rerun.checks == []
    assert lake.table("bronze", "users").read(spark).count() == 1
    header_with_geom = ",".join(raw_names("users"))
    _write(raw / "users" / "part-2.csv", [header_with_geom, GOOD.replace("1,Ann", "2,Ann") + ",POINT(-72.9 -8.1)"])
    [third] = bronze.run(spark, lake, ("users",))
    assert [c.source_file.rsplit("/", 1)[-1] for c in third.checks] == ["part-2.csv"]
    table = lake.table("bronze", "users").read(spark)
    assert sorted(r["id"] for r in table.collect()) == ["1", "2"]
    assert bronze.run(spark, lake, ("users",))[0].ingested == []


@pytest.mark.parametrize("content, problem", [
    (["id,first_name,nickname", "1,a,b"], "unknown columns ['nickname']"),
    ([], "empty file"),
    (["\x00\x01PK binary"], "not a UTF-8 CSV"),
])
def test_a_bad_file_stops_with_one_line_and_modifies_nothing(spark, tmp_path, capsys, content, problem):
    raw = tmp_path / "raw"
    _write(raw / "users" / "part-1.csv", [USERS_HEADER, GOOD])
    root = tmp_path / "lh"
    assert main(["bronze", "--raw", str(raw), "--lakehouse", str(root), "--tables", "users"]) == 0
    version = Lakehouse(raw=str(raw), root=str(root)).table("bronze", "users").version(spark)
    bad = raw / "users" / "part-2.csv"
    bad.write_text("\n".join(content), encoding="utf-8")
    capsys.readouterr()
    assert main(["bronze", "--raw", str(raw), "--lakehouse", str(root), "--tables", "users"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "part-2.csv" in err[0] and problem in err[0]
    assert Lakehouse(raw=str(raw), root=str(root)).table("bronze", "users").version(spark) == version


def test_missing_raw_folder_says_what_to_do(tmp_path, capsys):
    assert main(["bronze", "--raw", str(tmp_path / "nowhere"), "--lakehouse", str(tmp_path / "lh")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "ecom-lakehouse generate" in err


def test_raw_files_split_finely_only_inside_and_only_on_a_local_master(spark):
    from ecom_lakehouse.session import raw_files_split_finely

    key = "spark.sql.files.minPartitionNum"
    assert spark.conf.get(key, None) is None
    with raw_files_split_finely(spark):
        assert spark.conf.get(key) == str(4 * spark.sparkContext.defaultParallelism)
    assert spark.conf.get(key, None) is None  # the stages after bronze read Delta with Spark's own splits
