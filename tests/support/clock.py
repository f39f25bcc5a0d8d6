"""A process clock a test can step: `time.time()` and `datetime.now()` shifted by a number read from a file.

`ShiftedClock(folder).env` goes into a process's environment (operators.start(env=...),
pools.start(env=...)); `clock.step(seconds)` moves that process's wall clock from then on
(the monotonic clock is left alone, as a real NTP step leaves CLOCK_MONOTONIC alone).
"""

from __future__ import annotations

import os
from pathlib import Path

SITECUSTOMIZE = """
import datetime as _dt
import os as _os
import time as _time

_FILE = _os.environ.get("QORCH_TEST_CLOCK_OFFSET_FILE")
if _FILE:
    _real_time, _real_time_ns = _time.time, _time.time_ns
    _cache = [0.0, float("-inf")]

    def _offset():
        now = _time.monotonic()
        if now - _cache[1] > 0.05:
            try:
                with open(_FILE) as _f:
                    _cache[0] = float(_f.read().strip() or 0)
            except (OSError, ValueError):
                pass
            _cache[1] = now
        return _cache[0]

    def _shifted_time():
        return _real_time() + _offset()

    def _shifted_time_ns():
        return _real_time_ns() + int(_offset() * 1e9)

    _time.time, _time.time_ns = _shifted_time, _shifted_time_ns

    class _ShiftedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return _dt.datetime.fromtimestamp(_shifted_time(), tz)

        @classmethod
        def utcnow(cls):
            return _dt.datetime.fromtimestamp(_shifted_time(), _dt.timezone.utc).replace(tzinfo=None)

    _BASE = _dt.datetime
    _dt.datetime = _ShiftedDatetime
    _ShiftedDatetime.__name__ = "datetime"
"""


class ShiftedClock:
    """One shiftable wall clock (any number of processes may share it)."""

    def __init__(self, folder: Path, offset: float = 0.0) -> None:
        """Write the shim into `folder` and start at `offset` seconds from the real clock."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self._folder = folder
        self._file = folder / "offset"
        self.offset = 0.0
        self.set(offset)

    @property
    def env(self) -> dict[str, str]:
        """What to add to a process's environment for it to read this clock."""
        path = os.pathsep.join(p for p in (str(self._folder), os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": path, "QORCH_TEST_CLOCK_OFFSET_FILE": str(self._file)}

    def set(self, offset: float) -> None:
        """Put the clock `offset` seconds off the real one."""
        self.offset = offset
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(repr(offset))
        tmp.replace(self._file)

    def step(self, seconds: float) -> None:
        """Step the clock by `seconds` (forward or back)."""
        self.set(self.offset + seconds)
