"""spark-submit entry script for EMR steps: `spark-submit … emr_entry.py <stage> --env emr …`."""
from ecom_lakehouse.cli import main

raise SystemExit(main())
