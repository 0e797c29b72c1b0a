"""Progress: an overall bar plus one bar per running job, fed by ComfyUI's websocket ``progress`` messages.

Bars only on a terminal (or with ``--progress on``). In logs (not a TTY) there are no bars, only one line per
job that finishes, fails or moves to another server; ``--quiet`` keeps only errors and the summary.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, mode: str = "auto", quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
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

    def job_progress(self, job_id: str, value: int, maximum: int, node: str | None) -> None:
        bar = self.bars.get(job_id)
        if bar is None:
            return
        if bar.total != maximum:
            bar.reset(total=maximum)
        bar.n = value
        bar.set_postfix_str(f"node {node}" if node else "", refresh=False)
        bar.refresh()

    def job_ended(self, job_id: str, line: str | None, advance: bool = True, error: bool = False) -> None:
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
