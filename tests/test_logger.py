"""The progress display: live on a terminal, periodic log lines otherwise, silent when asked."""

import io
import logging

from rl_relax.logger import Progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line():
    stream = FakeTerminal()
    progress = Progress(1000, "auto", stream=stream)
    progress.update(500, fps=100.0, mean_return=12.5, force=True)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r") and "step 500/1,000 (50%)" in text and "fps 100" in text
    assert "return 12.5" in text and "eta 0:00:05" in text and text.endswith("\n")


def test_progress_off_a_terminal_logs_plain_lines(caplog):
    stream = io.StringIO()
    progress = Progress(1000, "auto", interval_s=3600, stream=stream)
    with caplog.at_level(logging.INFO, logger="rl_relax"):
        progress.update(100, fps=50.0, mean_return=None)  # within the interval: quiet
        progress.update(200, fps=50.0, mean_return=None, force=True)
    progress.close()
    assert stream.getvalue() == ""  # no carriage returns in logs
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["step 200/1,000 (20%) | fps 50 | return n/a | eta 0:00:16"]


def test_progress_never_is_silent(caplog):
    stream = FakeTerminal()
    with caplog.at_level(logging.INFO, logger="rl_relax"):
        Progress(10, "never", stream=stream).update(5, 1.0, 1.0, force=True)
    assert stream.getvalue() == "" and not caplog.records
