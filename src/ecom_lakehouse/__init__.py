"""ecom_lakehouse: thelook e-commerce analytics on Spark + Delta Lake."""

__version__ = "0.1.0"
