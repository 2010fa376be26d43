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
