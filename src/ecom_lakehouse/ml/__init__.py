"""Spark MLlib models on the gold tables."""
