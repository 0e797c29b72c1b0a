"""Progress: an overall bar plus one bar per running job, fed by ComfyUI's websocket ``progress`` messages.

Bars only on a terminal (or with ``--progress on``). In logs (not a TTY) there are no bars: one line per job that
finishes, fails or moves to another server, and every ``log_every`` seconds one line per running job with its step
and node (``heartbeat``); ``--quiet`` keeps only errors and the summary.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from tqdm import tqdm


@dataclass
class JobState:
    """What the log lines show of a running job: its node and the node's step."""

    started: float
    node: str | None = None
    value: int = 0
    maximum: int = 0


class Progress:
    def __init__(self, total: int, mode: str = "auto", quiet: bool = False, stream=None, log_every: float = 10.0):
        self.stream = stream or sys.stderr
        self.log_every = log_every
        self.states: dict[str, JobState] = {}
        self.bars_on = mode == "on" or (mode == "auto" and self.stream.isatty())
        self.quiet = quiet
        self.overall = tqdm(
            total=total,
            desc="jobs",
            unit="job",
            position=0,
            file=self.stream,
            disable=not self.bars_on,
            dynamic_ncols=True,
            leave=True,
        )
        self.bars: dict[str, tqdm] = {}
        self.free_positions: list[int] = []
        self.next_position = 1

    def _position(self) -> int:
        if self.free_positions:
            return self.free_positions.pop(0)
        self.next_position += 1
        return self.next_position - 1

    def say(self, text: str, error: bool = False) -> None:
        if self.quiet and not error:
            return
        if self.bars_on:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def job_started(self, job_id: str, server_url: str) -> None:
        self.states.setdefault(job_id, JobState(started=time.monotonic()))
        if not self.bars_on or job_id in self.bars:
            return
        position = self._position()
        bar = tqdm(
            total=1,
            desc=f"{job_id} @ {server_url.split('//')[-1]}",
            unit="step",
            position=position,
            file=self.stream,
            leave=False,
            dynamic_ncols=True,
        )
        bar.sdl3d_position = position
        self.bars[job_id] = bar

    def job_node(self, job_id: str, node: str) -> None:
        """The job's server started executing `node` (its steps are unknown until it reports progress)."""
        state = self.states.get(job_id)
        if state is not None and state.node != node:
            state.node, state.value, state.maximum = node, 0, 0

    def job_progress(self, job_id: str, value: int, maximum: int, node: str | None) -> None:
        state = self.states.get(job_id)
        if state is not None:
            state.node, state.value, state.maximum = node or state.node, value, maximum
        bar = self.bars.get(job_id)
        if bar is None:
            return
        if bar.total != maximum:
            bar.reset(total=maximum)
        bar.n = value
        bar.set_postfix_str(f"node {node}" if node else "", refresh=False)
        bar.refresh()

    def heartbeat(self) -> None:
        """One line per running job (log mode only): 'job-0001: step 7/12 in node 6 (SyncDiffusion KSampler), 41 s'."""
        if self.bars_on or self.quiet:
            return
        now = time.monotonic()
        for job_id, state in self.states.items():
            where = f"node {state.node}" if state.node else "starting"
            step = f"step {state.value}/{state.maximum} in " if state.maximum else ""
            self.say(f"{job_id}: {step}{where}, {now - state.started:.0f} s")

    async def log_periodically(self) -> None:
        """Run `heartbeat` every `log_every` seconds until cancelled."""
        while self.log_every > 0:
            await asyncio.sleep(self.log_every)
            self.heartbeat()

    def job_ended(self, job_id: str, line: str | None, advance: bool = True, error: bool = False) -> None:
        self.states.pop(job_id, None)
        bar = self.bars.pop(job_id, None)
        if bar is not None:
            self.free_positions.append(bar.sdl3d_position)
            self.free_positions.sort()
            bar.close()
        if advance:
            self.overall.update(1)
        if line:
            self.say(line, error=error)

    def close(self) -> None:
        for job_id in list(self.bars):
            self.job_ended(job_id, None, advance=False)
        self.overall.close()
