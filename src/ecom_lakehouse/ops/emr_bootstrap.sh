#!/bin/bash
# EMR bootstrap action: install what the steps need beyond EMR's Spark and Delta, on every node
# (nodes that managed scaling adds later run it too). No PyPI: only the wheelhouse that
# `ecom-lakehouse emr deploy-artifacts` (or Terraform) put in the artifacts bucket.
# Our own code is not installed here: each step ships the exact build it was submitted with.
# Argument 1: s3:// URI of the wheelhouse folder (wheels + requirements.txt).
# Argument 2: the Python the steps run on: the spark-env PYSPARK_PYTHON of emr_configurations.json.
set -euo pipefail
WHEELHOUSE_URI="${1%/}/"
PYTHON="$2"
LOCAL="$(mktemp -d)"
aws s3 cp --recursive --only-show-errors "$WHEELHOUSE_URI" "$LOCAL/"
# pip runs from the wheelhouse's own pip wheel (a wheel on the path runs as-is, as get-pip.py runs its
# bundled pip): nothing shows EMR installs pip for python3.11, only the interpreter (aws/FACTS.md).
# --no-deps: the file pins the whole closure; pyspark is EMR's own (on the Python path spark-submit sets).
PIP_WHEEL="$(ls "$LOCAL"/pip-*-py3-none-any.whl)"
sudo "$PYTHON" "$PIP_WHEEL/pip" install --quiet --no-index --no-deps --find-links "$LOCAL" -r "$LOCAL/requirements.txt"
rm -rf "$LOCAL"
