"""first_line: the reason part of every one-line error."""

from clipflow.errors import first_line


def test_first_line_skips_blank_lines_and_strips():
    assert first_line(ValueError("\n  \n  bad value  \nsecond line")) == "bad value"


def test_first_line_of_an_empty_message_is_the_type_name():
    # str(err).splitlines()[0] raised IndexError here: a traceback instead of a one-line error
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("   \n")) == "ValueError"


def test_first_line_is_cut_to_the_limit():
    assert first_line(OSError("x" * 200), limit=20) == "x" * 17 + "..."
    assert first_line(OSError("x" * 20), limit=20) == "x" * 20


def test_a_closed_pipe_ends_quietly_with_the_sigpipe_status():
    """``clipflow-detect out=- | head``: the reader leaves early; no traceback, status 141.

    A real pipe is the point, so this one runs a subprocess (stdlib-only imports, ~0.2 s)."""
    import subprocess
    import sys

    from clipflow.cli.common import BROKEN_PIPE_EXIT

    code = (
        "from clipflow.cli.common import guarded\n"
        "guarded(lambda: [print(i, flush=True) for i in range(10**6)])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == BROKEN_PIPE_EXIT
    assert first == b"0\n"
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
