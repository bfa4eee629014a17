#!/bin/bash
# EMR bootstrap action: install this project's wheel on every node.
# Argument 1: s3:// URI of the wheel (uploaded by `ecom-lakehouse emr deploy-artifacts` or Terraform).
# Spark and its Python bindings come with EMR; only our package and its light dependencies are added.
set -euo pipefail
WHEEL_URI="$1"
DELTA_SPARK_VERSION="${2:-3.3.2}"
aws s3 cp "$WHEEL_URI" /tmp/
sudo python3 -m pip install --quiet --no-deps "/tmp/$(basename "$WHEEL_URI")" "delta-spark==${DELTA_SPARK_VERSION}"
sudo python3 -m pip install --quiet "numpy<2" "pandas<2.3" "pyarrow<19" matplotlib boto3
