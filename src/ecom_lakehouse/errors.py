"""Errors as one line a user can act on: the first line of an exception, or the root cause at the end
of a JVM exception chain (Py4J's own line, "An error occurred while calling o58.save.", names none),
with a hint for the causes users of the platforms meet most."""
from __future__ import annotations

import contextlib

# Delta's commit conflicts as Python types, classic and Spark Connect alike. Delta 3.3: importing
# delta.exceptions makes PySpark convert the JVM's conflicts into them; Delta 4: its `captured` module
# does that for classic sessions (the Connect client converts them itself).
with contextlib.suppress(ImportError):
    import delta.exceptions.captured  # noqa: F401
from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
    ProtocolChangedException,
)
from pyspark.errors import AnalysisException

DELTA_CONFLICTS = (ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
                   ConcurrentTransactionException, ConcurrentWriteException, DeltaConcurrentModificationException,
                   MetadataChangedException, ProtocolChangedException)
# Two writers creating one catalog table: the later one finds it made.
TABLE_CREATED_MEANWHILE = ("TABLE_OR_VIEW_ALREADY_EXISTS", "DELTA_TABLE_ALREADY_EXISTS")


def is_write_conflict(err: BaseException) -> bool:
    """Delta's optimistic concurrency lost a race (retrying the write is right), told by the error's type
    and error class, never by its words."""
    if isinstance(err, DELTA_CONFLICTS):
        return True
    return isinstance(err, AnalysisException) and error_condition(err) in TABLE_CREATED_MEANWHILE


def error_condition(err: BaseException) -> str | None:
    """A Spark error's condition ("TABLE_OR_VIEW_ALREADY_EXISTS"): getCondition from Spark 4 on, where
    getErrorClass is deprecated; getErrorClass on Spark 3.5."""
    read = getattr(err, "getCondition", None) or getattr(err, "getErrorClass", None)
    return read() if read else None


def one_line(err: BaseException) -> str:
    """The first line of an error; Spark's JVM errors carry pages of stack below it."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip()


# What to do about the root causes a cluster's users meet most, by words in the cause.
# First match wins: Glue's Lake Formation refusal is an AccessDeniedException too, but S3's policy is not the cause.
ROOT_CAUSE_HINTS = (
    (("Lake Formation",), "Lake Formation governs the Glue databases: an admin must grant the role Spark runs as "
                          "CREATE_TABLE and ALTER on the silver and gold databases, and DATA_LOCATION_ACCESS on "
                          "s3://<lake>/silver/ and s3://<lake>/gold/"),
    (("AccessDenied", "Access Denied", "403"), "the role Spark runs as, the cluster's instance role or the "
                                               "serverless job role, may not do this on that path: check its S3 policy"),
    (("KMS", "kms:"), "the role Spark runs as may not use the bucket's KMS key: check the key policy and the role's "
                      "kms: actions"),
    (("FileNotFoundException", "NoSuchKey", "NoSuchBucket", "does not exist"),
     "the path does not exist: check the --raw/--lakehouse URI"),
)


def java_root_cause(err: BaseException) -> str | None:
    """The last cause of a JVM error's chain, `java.Class: message` (first line); None for a Python error
    or a JVM that is gone. Py4J's own line ("An error occurred while calling o58.save.") names no cause."""
    java = getattr(err, "java_exception", None) or getattr(err, "_origin", None)  # Py4JJavaError, or pyspark's converted one
    try:
        while java is not None and java.getCause() is not None:
            java = java.getCause()
        if java is None:
            return None
        text = str(java.toString()).strip()
    except Exception:  # noqa: BLE001 - the JVM died with the error: the Python line is all there is
        return None
    if "Traceback (most recent call last)" in text:  # Python code called back from the JVM (a stream's foreachBatch) failed
        return [line for line in text.splitlines() if line.strip()][-1].strip()
    return text.splitlines()[0]


def error_line(err: BaseException) -> str:
    """One line for an unexpected error: the JVM's root cause when there is one, and what to do about it."""
    root, first = java_root_cause(err), one_line(err)
    if root is None:
        return f"{type(err).__name__}: {first}"
    # Py4J's own line names no cause; a failed Python callback's line ends in the first line of its traceback
    uninformative = first.startswith("An error occurred while calling") or "Traceback (most recent call last)" in first
    line = root if root in first or uninformative else f"{first}: caused by {root}"
    hint = next((h for words, h in ROOT_CAUSE_HINTS if any(w in root for w in words)), None)
    return f"{line} ({hint})" if hint else line
