"""The prefetcher's terminal status line (glance_cache_mw/cmd/progress.py)."""

import io

from glance_cache_mw.cmd import progress as progress_mod


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_images_bytes_and_rate_on_a_terminal():
    clock = iter(range(100)).__next__
    progress = progress_mod.Progress(FakeTty(), interval_s=0, clock=clock)
    progress.begin(2)
    progress.start("abc", 2048)
    progress.advance("abc", 1024)
    line = progress.line()
    assert "0/2 images" in line and "abc 1.0 KiB 50%" in line and "/s" in line
    progress.stop("abc")
    assert progress.clear_line() is True
    assert progress.stream.getvalue().endswith("\r\033[K")
    quiet = progress_mod.Progress(io.StringIO())
    quiet.begin(1)
    quiet.start("abc", 10)
    quiet.advance("abc", 10)
    assert not quiet.enabled and quiet.stream.getvalue() == ""
