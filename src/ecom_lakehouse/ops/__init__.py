"""Operations tooling for the deployed pipeline (Databricks workspace, AWS EMR)."""
