"""Evaluate expressions of terraform/ with Terraform itself (`terraform console`, no provider needed).

Tests need what Terraform would compute, not a retyped copy: the artifact keys, and the instance
role's policy as JSON for the EMR twin. References to things only a real apply knows (bucket ARNs,
the account id, the key ARN) are replaced by the values a test chooses; any reference left over
makes `terraform console` fail, so a new one cannot slip through unevaluated.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import hcl2

TF = Path(__file__).resolve().parents[1] / "terraform"


def available() -> bool:
    return shutil.which("terraform") is not None


def evaluate(expression: str) -> object:
    """The JSON value of one Terraform expression."""
    with tempfile.TemporaryDirectory() as empty:
        out = subprocess.run(["terraform", "console"], input=f"jsonencode({expression})\n", cwd=empty,
                             capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ValueError(f"terraform console could not evaluate {expression[:200]}…: {out.stderr.strip()[-500:]}")
    return json.loads(json.loads(out.stdout.strip()))


def blocks(kind: str) -> dict:
    """Every `kind` block of terraform/*.tf (locals, data, resource), merged; strings keep their HCL quoting."""
    merged: dict = {}
    for path in sorted(TF.glob("*.tf")):
        for item in hcl2.loads(path.read_text()).get(kind, []):
            for key, value in item.items():
                if isinstance(value, dict) and kind in ("data", "resource"):
                    for name, body in value.items():
                        merged.setdefault(key.strip('"'), {})[name.strip('"')] = body
                else:
                    merged[key] = value
    return merged


def as_expression(value) -> str:
    """python-hcl2's output back to HCL expression text."""
    if isinstance(value, list):
        return "[" + ", ".join(as_expression(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {as_expression(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    return value if isinstance(value, str) else json.dumps(value)


def substitute(expression: str, references: dict[str, str]) -> str:
    for reference, literal in sorted(references.items(), key=lambda kv: -len(kv[0])):
        expression = expression.replace(reference, literal)
    return expression


def policy_document(name: str, references: dict[str, str]) -> dict:
    """data.aws_iam_policy_document.<name> as the IAM JSON Terraform would render (Allow statements
    with sid, actions and resources; a condition block is refused rather than dropped)."""
    body = blocks("data")["aws_iam_policy_document"][name]
    statements = []
    for st in body["statement"]:
        if "condition" in st or "principals" in st:
            raise ValueError(f"{name}: statement {st.get('sid')} has a condition or principals; extend policy_document")
        fields = {"Sid": st["sid"], "Effect": st.get("effect", '"Allow"'), "Action": as_expression(st["actions"]),
                  "Resource": as_expression(st["resources"])}
        statements.append("{" + ", ".join(f"{k} = {substitute(v, references)}" for k, v in fields.items()) + "}")
    return evaluate('{Version = "2012-10-17", Statement = [' + ", ".join(statements) + "]}")


def named_queries() -> dict[str, str]:
    """The Athena named queries' text as Terraform reads it (athena.tf's fileset over the analyst views)."""
    from ecom_lakehouse.analyst_views import SQL_DIR

    return evaluate(substitute(blocks("locals")["analyst_views"][2:-1], {"local.views_dir": json.dumps(str(SQL_DIR))}))
