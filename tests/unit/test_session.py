"""The local session's JVM, and the session's end: a Spark Connect client's session is closed, a classic one is
left to the platform."""
from ecom_lakehouse.session import SHORT_RUN_JIT_OPTIONS, end_session


class _Session:
    def __init__(self, fails: bool = False):
        self.stopped, self.fails = 0, fails

    def stop(self):
        self.stopped += 1
        if self.fails:
            raise RuntimeError("SESSION_CLOSED: the server has gone\ndetails")


class _ConnectSession(_Session):
    pass


_ConnectSession.__module__ = "pyspark.sql.connect.session"  # what session.is_connect tells a client by


def test_a_connect_session_is_closed_and_a_classic_one_is_left_running():
    connect, classic = _ConnectSession(), _Session()
    end_session(connect)
    end_session(classic)
    assert (connect.stopped, classic.stopped) == (1, 0)


def test_a_session_that_does_not_close_leaves_one_note_and_no_error(capsys):
    end_session(_ConnectSession(fails=True))
    assert capsys.readouterr().err == (
        "ecom-lakehouse: note: the Spark Connect session did not close: SESSION_CLOSED: the server has gone\n")


def test_the_local_driver_jvm_runs_in_utc_with_the_short_run_jit_options(spark):
    """Read from the JVM itself (its input arguments), not from the conf that asked for them: a setting
    given after the JVM started would be in the conf and have no effect."""
    arguments = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert {"-Duser.timezone=UTC", *SHORT_RUN_JIT_OPTIONS.split()} <= set(arguments), arguments
