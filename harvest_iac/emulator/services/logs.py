"""App logs: what the app's containers print, for `modal run`, `modal serve`, `app.run()`
and `modal app logs`.

AppGetLogs is a stream held open up to its timeout: it sends the lines after the caller's
last entry as they come, and ends with `app_done` once the app has stopped (the client
reopens a stream that just ends, so it must never end early without it). AppFetchLogs
answers the newest lines of a time range (`modal app logs` without `-f`), and AppCountLogs
how many lines each bucket of a range holds (`modal app logs --since`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import groupby
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from modal_proto import api_pb2

from harvest_iac.emulator.base import Ctx, Service, streaming
from harvest_iac.emulator.runtime.logs import STDERR, LogLine
from harvest_iac.emulator.services.apps import STOPPED, app_row

MAX_FOLLOW_S = 55.0


def _matches(line: LogLine, req: Any) -> bool:
    return ((not req.task_id or line.task_id == req.task_id)
            and (not req.function_id or line.function_id == req.function_id)
            and (not getattr(req, "file_descriptor", 0) or line.fd == req.file_descriptor)
            and (not getattr(req, "source", 0) or line.fd == req.source)
            and (not req.search_text or req.search_text in line.data))


def _batches(lines: Iterable[LogLine]) -> list[api_pb2.TaskLogsBatch]:
    """Consecutive lines of one container make one batch."""
    batches = []
    for (task_id, function_id), group in groupby(lines, key=lambda ln: (ln.task_id, ln.function_id)):
        items = list(group)
        batches.append(api_pb2.TaskLogsBatch(
            task_id=task_id, function_id=function_id, entry_id=str(items[-1].entry),
            items=[api_pb2.TaskLogs(data=ln.data, file_descriptor=ln.fd, timestamp=ln.at,  # type: ignore[arg-type]
                                    container_id=task_id) for ln in items],
        ))
    return batches


class LogService(Service):
    """AppGetLogs, AppFetchLogs, AppCountLogs."""

    @streaming
    async def AppGetLogs(self, stream: Any, ctx: Ctx) -> None:
        req: api_pb2.AppGetLogsRequest = await stream.recv_message()
        app_row(self.emu, req.app_id)
        log = self.emu.runtime.logs.app(req.app_id)
        after = int(req.last_entry_id) if req.last_entry_id.isdigit() else 0
        deadline = time.monotonic() + min(max(req.timeout, 0.0), MAX_FOLLOW_S)
        while True:
            lines = [ln for ln in log.after(after) if _matches(ln, req)]
            if lines:
                after = lines[-1].entry
                for batch in _batches(lines):
                    await stream.send_message(batch)
            elif log.done or app_row(self.emu, req.app_id)["state"] == STOPPED:
                await stream.send_message(api_pb2.TaskLogsBatch(app_done=True))
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await log.changed.wait(remaining)

    def _lines(self, req: Any) -> list[LogLine]:
        """The app's lines in the request's time range that pass its filters."""
        app_row(self.emu, req.app_id)
        since = req.since.ToNanoseconds() / 1e9 if req.HasField("since") else 0.0
        until = req.until.ToNanoseconds() / 1e9 if req.HasField("until") else float("inf")
        return [ln for ln in self.emu.runtime.logs.app(req.app_id).lines
                if since <= ln.at < until and _matches(ln, req)]

    async def AppFetchLogs(self, req: api_pb2.AppFetchLogsRequest, ctx: Ctx) -> api_pb2.AppFetchLogsResponse:
        lines = self._lines(req)
        if req.limit:
            lines = lines[-req.limit:]
        return api_pb2.AppFetchLogsResponse(batches=_batches(lines))

    async def AppCountLogs(self, req: api_pb2.AppCountLogsRequest, ctx: Ctx) -> api_pb2.AppCountLogsResponse:
        """How many lines each time bucket of the range holds (buckets aligned to multiples
        of their size, as Modal's are): `modal app logs --since` plans its fetches by them."""
        size = max(int(req.bucket_secs), 1)
        counts: dict[int, list[int]] = {}
        for line in self._lines(req):
            per_fd = counts.setdefault(int(line.at // size) * size, [0, 0])
            per_fd[1 if line.fd == STDERR else 0] += 1
        if req.HasField("since") and req.HasField("until"):
            first = int(req.since.seconds // size) * size
            for start in range(first, int(req.until.seconds) + 1, size):
                counts.setdefault(start, [0, 0])
        return api_pb2.AppCountLogsResponse(app_id=req.app_id, buckets=[
            api_pb2.AppCountLogsResponse.LogBucket(
                bucket_start_at=Timestamp(seconds=start), stdout_logs=out, stderr_logs=err)
            for start, (out, err) in sorted(counts.items())
        ])
