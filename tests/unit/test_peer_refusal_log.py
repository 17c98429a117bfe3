"""middleware/peer.py RefusalLog: refused peer requests cannot forge or flood the log."""

import logging

from glance_cache_mw.middleware import peer

LOGGER = "glance_cache_mw.middleware.peer"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _records(caplog, level):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_one_warning_per_interval_then_the_count_of_the_others(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    log = peer.RefusalLog(interval_s=60, clock=clock)
    for _ in range(5):
        log.refused("image-a", "10.0.0.9", "unsigned request")
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "more since" not in warnings[0].getMessage()
    assert len(_records(caplog, logging.DEBUG)) == 4
    clock.now += 59
    log.refused("image-a", "10.0.0.9", "unsigned request")
    assert len(_records(caplog, logging.WARNING)) == 1
    clock.now += 1
    log.refused("image-b", "10.0.0.9", "bad signature")
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "'image-b'" in warnings[1].getMessage()
    assert "and 5 more since the last such warning" in warnings[1].getMessage()


def test_the_id_is_logged_escaped_and_capped(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    log = peer.RefusalLog(clock=Clock())
    log.refused("a\nFORGED\r\x1b[2K" + "z" * 500, "10.0.0.9", "unsigned request")
    log.refused("b\nFORGED", "10.0.0.9", "unsigned request")   # at DEBUG: escaped too
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and "\r" not in message and "\x1b" not in message
        assert len(message) < 300
    assert "'a\\nFORGED\\r\\x1b[2K" in caplog.records[0].getMessage()
