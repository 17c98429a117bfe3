"""The commands' one exit-status mapping (glance_cache_mw/cmd/common.py)."""

import pytest

from glance_cache_mw import exception
from glance_cache_mw.cmd import common


@pytest.mark.parametrize("error, status", [
    (exception.InvalidConfiguration(reason="debug='maybe' is not a boolean"), 2),
    (exception.BadDriverConfiguration(driver_name="xattr", reason="no user xattrs"), 2),
    (exception.ImageNotFound("No image found with ID abc"), 1),
    (exception.GlanceException("database gone"), 1),
])
def test_an_error_is_one_line_and_its_exit_status(capsys, error, status):
    @common.exits_cleanly
    def main(argv, extra=None):
        assert argv == ["--x"] and extra == "passed through"
        raise error

    assert main(["--x"], extra="passed through") == status
    assert capsys.readouterr().err == "error: %s\n" % error


def test_ctrl_c_is_130_and_a_return_value_passes_through():
    def interrupted(argv):
        raise KeyboardInterrupt

    assert common.exits_cleanly(interrupted)(None) == 130
    assert common.exits_cleanly(lambda argv: 0)(None) == 0


def test_a_bug_is_not_hidden_as_an_exit_status():
    def broken(argv):
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        common.exits_cleanly(broken)(None)
