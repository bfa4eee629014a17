from ecom_lakehouse.cli import entry

entry()
