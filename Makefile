# Two entry points for people: `make run` (main job, local) and `make test`.
# Both install what they need first: a virtualenv with the pinned packages and
# the Delta Lake jars from Maven Central into ~/.m2 (read by the session factory,
# so nothing is downloaded at run or test time), a second one for the Spark 4 line (.venv-spark4),
# the Databricks runtimes' stand-ins (.venv-dbr: 16.4 LTS, .venv-dbr17: 17.3 LTS, .venv-serverless4: serverless
# environment 4), checkov for the Terraform checks, and Debian's chromium, in which a test looks at the report.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DELTA_VERSION := 3.3.2
# The Spark 4 line (session.DELTA_FOR_SPARK; pyproject's `spark4` extra): Delta 4.0 on Scala 2.13.
SPARK4_VENV := .venv-spark4
DELTA4_VERSION := 4.0.1
# The EMR twin reads s3:// through Hadoop S3A: the hadoop-aws of pyspark 3.5.6's Hadoop (3.3.4)
# and the AWS SDK bundle it declares come with it from Maven Central.
HADOOP_AWS_VERSION := 3.3.4
SCALA_VERSION := 2.12
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
# The Databricks twin: what DBR 16.4 LTS provides (Spark 3.5.2 and its usual libraries), nothing of ours.
DBR_VENV := .venv-dbr
DBR_PACKAGES := pyspark==3.5.2 numpy==1.26.4 pandas==1.5.3 pyarrow==15.0.2 matplotlib==3.8.4 databricks-sdk==0.30.0 boto3==1.34.39 mlflow-skinny==2.21.3
# DBR 17.3 LTS, the Spark 4 line's twin runtime: Spark 4.0.0 and MLflow 3.0.1 from shared/databricks/FACTS.md;
# the other libraries' versions are this twin's assumption (those of Databricks' serverless base image),
# not taken from 17.3's release notes.
DBR17_VENV := .venv-dbr17
DBR17_PACKAGES := pyspark==4.0.0 numpy==2.1.3 pandas==2.2.3 pyarrow==19.0.1 matplotlib==3.10.0 databricks-sdk==0.49.0 boto3==1.36.2 mlflow-skinny==3.0.1
# Serverless environment version 4, the serverless twin's task environment: Python 3.12, its Spark client
# Databricks Connect 17.2.3 and MLflow 2.22.0 (environment versions 4 and 5's release notes); the other libraries
# as in .venv-dbr17 (the twin's assumption). Databricks Connect 17 requires Python 3.12: the first python3.12 on
# PATH or under pyenv; without one the environment is not built and the twin's serverless job is skipped.
SERVERLESS4_VENV := .venv-serverless4
SERVERLESS4_PYTHON ?= $(firstword $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null) $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12))
SERVERLESS4_PACKAGES := databricks-connect==17.2.3 mlflow-skinny==2.22.0 numpy==2.1.3 pandas==2.2.3 pyarrow==19.0.1 \
	matplotlib==3.10.0 databricks-sdk==0.49.0 boto3==1.36.2 setuptools==75.8.0 grpcio==1.67.1 grpcio-status==1.67.1 \
	googleapis-common-protos==1.65.0

# apt-get needs root: as root it runs directly, otherwise through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test screenshot bench bench-honesty bench-taste bench-implicit bench-crash bench-ab wheel wheelhouse clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile src/ecom_lakehouse/ops/emr_requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[local,dev]'
	mvn -q -B dependency:get -Dartifact=io.delta:delta-spark_$(SCALA_VERSION):$(DELTA_VERSION)
	mvn -q -B dependency:get -Dartifact=org.apache.hadoop:hadoop-aws:$(HADOOP_AWS_VERSION)
	mvn -q -B dependency:get -Dartifact=io.delta:delta-spark_2.13:$(DELTA4_VERSION)
	test -x $(SPARK4_VENV)/bin/python || $(PYTHON) -m venv $(SPARK4_VENV)
	$(SPARK4_VENV)/bin/pip install -q --upgrade pip
	$(SPARK4_VENV)/bin/pip install -q -e '.[spark4]'
	# checkov pins an old hcl2 fork that clashes with python-hcl2: give it its own venv.
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q 'checkov==$(CHECKOV_VERSION)'
	test -x $(DBR_VENV)/bin/python || $(PYTHON) -m venv $(DBR_VENV)
	$(DBR_VENV)/bin/pip install -q $(DBR_PACKAGES)
	# Delta's Python API as the runtime has it (its jars come from ~/.m2 through the twin's spark conf).
	$(DBR_VENV)/bin/pip install -q --no-deps delta-spark==$(DELTA_VERSION)
	test -x $(DBR17_VENV)/bin/python || $(PYTHON) -m venv $(DBR17_VENV)
	$(DBR17_VENV)/bin/pip install -q $(DBR17_PACKAGES)
	$(DBR17_VENV)/bin/pip install -q --no-deps delta-spark==$(DELTA4_VERSION)
	if [ -n "$(SERVERLESS4_PYTHON)" ]; then \
	  test -x $(SERVERLESS4_VENV)/bin/python || $(SERVERLESS4_PYTHON) -m venv $(SERVERLESS4_VENV); \
	  $(SERVERLESS4_VENV)/bin/pip install -q --upgrade pip && $(SERVERLESS4_VENV)/bin/pip install -q $(SERVERLESS4_PACKAGES); \
	else echo "no Python 3.12 here: $(SERVERLESS4_VENV) not built, the Databricks twin's serverless job will be skipped"; fi
	# What EMR nodes and EMR Serverless jobs install (the wheelhouse and the packed environment), fetched
	# once per requirements file into ~/.cache/ecom_lakehouse: the EMR twins download nothing at test time.
	$(BIN)/ecom-lakehouse emr build-environment
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }
	touch $@

run: install
	$(BIN)/ecom-lakehouse run

test: install
	$(BIN)/pytest

# Benchmarks (not tests): pipeline stages per scale; ALS vs its baselines on faithful and taste
# data, and as the planted taste grows; Spark ALS vs the `implicit` library (installed only for this one); SIGKILL mid-stage and rerun;
# the A/B test simulated.
bench: install
	$(BIN)/python benchmarks/bench_pipeline.py $(BENCH_ARGS)

bench-honesty: install
	$(BIN)/python benchmarks/recommender_honesty.py $(BENCH_ARGS)

# Each strategy against chance and the generator's oracle, as the planted taste grows from none to full.
bench-taste: install
	$(BIN)/python benchmarks/taste_strength.py $(BENCH_ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[local,bench]'
	touch $@

bench-implicit: $(BENCH_STAMP)
	$(BIN)/python benchmarks/als_vs_implicit.py $(BENCH_ARGS)

bench-crash: install
	$(BIN)/python benchmarks/crash_recovery.py $(BENCH_ARGS)

# The A/B hold-out's sequential test read after every look: false positives and power, simulated (no Spark).
bench-ab: install
	$(BIN)/python benchmarks/ab_simulation.py $(BENCH_ARGS)

# The report as Chromium shows it, the full page as a PNG beside it (after `make run`).
screenshot: install
	$(BIN)/python -m tests.headless_chromium lakehouse/reports/report.html lakehouse/reports/report.png

wheel: install
	$(BIN)/python -m build --wheel --outdir dist .

# What EMR nodes install at bootstrap, without PyPI (Terraform uploads it; see docs/emr.md).
wheelhouse: install
	$(BIN)/ecom-lakehouse emr build-wheelhouse --out dist/wheelhouse

clean:
	rm -rf lakehouse data reports dist build .pytest_cache
