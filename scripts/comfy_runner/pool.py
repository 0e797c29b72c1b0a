"""The pool: spread jobs over servers by queue length, re-queue what a lost server held, record every job.

A job is dispatched to the live server with the shortest queue (the server's own count over all its clients or
the number of our prompts on it, whichever is larger; ties go to the server that got fewer jobs), as long as
that queue is shorter than ``depth`` (2 by default: one running, one waiting, so a server never idles between
jobs and never hoards work another server could take). Every job ends in exactly one manifest record:

- ``ok``: every expected output produced (``outputs.missing_outputs``), every reported file (and mesh
  companion) downloaded, job.json written;
- ``skipped``: ``--resume`` found it complete from an earlier run;
- ``validation_error``: the server rejected the graph (HTTP 400) or dropped some of its output nodes (200 with
  ``node_errors``), with the nodes' messages; not retried;
- ``execution_error``: the prompt failed on the server, with the server's message; not retried;
- ``missing_outputs``: it ran, but an output node reported nothing; what it did report is downloaded and
  listed, no job.json (``--resume`` runs it again); not retried;
- ``timeout``: its server showed no progress for ``--timeout`` seconds while the job was on it (removed from
  that server's queue); a job that keeps making progress, or waits behind one that does, runs as long as it needs;
- ``unreachable``: no live server was left, or it was re-queued more than ``max_requeues`` times.

A job whose server dies, refuses work, or loses it (gone from both queue and history) goes back to the front of
the pending queue and runs on another server; its attempts are listed in its record.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import outputs
from .server import Rejected, Server, ServerGone, execution_message


@dataclass
class Job:
    index: int
    id: str
    prompt: dict
    workflow_ui: dict | None
    overrides: dict
    key: str
    dir: Path
    attempts: list = field(default_factory=list)
    dispatched: float = 0.0


def node_label(job: Job, node_id) -> str | None:
    """'6 (SyncDiffusion KSampler)': a node id with its title (or class) from the job's graph."""
    if node_id is None:
        return None
    node = job.prompt.get(str(node_id)) or {}
    name = (node.get("_meta") or {}).get("title") or node.get("class_type")
    return f"{node_id} ({name})" if name else str(node_id)


class JobTimeout(Exception):
    pass


# Websocket messages that show a server working (steps, nodes starting, finishing or served from cache).
PROGRESS_MESSAGES = frozenset(
    {"execution_start", "executing", "executed", "execution_cached", "progress", "progress_state"}
)


class Pool:
    def __init__(
        self,
        servers: list[Server],
        out_dir: Path,
        manifest: outputs.Manifest,
        progress,
        depth: int = 2,
        timeout: float = 1200,
        max_requeues: int = 3,
        include_temp: bool = False,
    ):
        self.servers = servers
        self.out_dir = out_dir
        self.manifest = manifest
        self.progress = progress
        self.depth = max(1, depth)
        self.timeout = timeout
        self.max_requeues = max_requeues
        self.include_temp = include_temp
        self.pending: deque[Job] = deque()
        self.results: dict[str, dict] = {}
        self.wake = asyncio.Event()
        self.dispatch_count = {server.url: 0 for server in servers}
        self.last_activity = {server.url: 0.0 for server in servers}  # monotonic time of its last sign of work
        for server in servers:
            server.on_message = self.on_message

    # -- websocket --------------------------------------------------------------------------------------------
    def on_message(self, server: Server, kind: str, data: dict) -> None:
        job = server.running.get(data.get("prompt_id"))
        if kind in PROGRESS_MESSAGES:
            self.last_activity[server.url] = time.monotonic()
        if kind == "status":
            self.wake.set()
        elif job is not None and kind == "execution_start":
            self.progress.job_started(job.id, server.url)
        elif job is not None and kind == "progress":
            self.progress.job_started(job.id, server.url)
            node = node_label(job, data.get("node"))
            self.progress.job_progress(job.id, int(data.get("value", 0)), int(data.get("max", 1)), node)
        elif job is not None and kind == "executing" and data.get("node") is not None:
            self.progress.job_started(job.id, server.url)
            self.progress.job_node(job.id, node_label(job, data["node"]))

    # -- dispatch ---------------------------------------------------------------------------------------------
    def pick(self) -> Server | None:
        ready = [s for s in self.servers if s.alive and s.load < self.depth]
        return min(ready, key=lambda s: (s.load, self.dispatch_count[s.url]), default=None)

    async def run(self, jobs: list[Job]) -> dict[str, dict]:
        self.pending.extend(jobs)
        unfinished = {job.id for job in jobs}
        tasks: set[asyncio.Task] = set()
        try:
            while unfinished - set(self.results):
                self.wake.clear()
                if not any(s.alive for s in self.servers):
                    reasons = "; ".join(f"{s.url}: {s.gone_reason}" for s in self.servers)
                    while self.pending:
                        self.finish(self.pending.popleft(), "unreachable", f"no server left ({reasons})")
                    if not tasks:
                        break
                elif self.pending:
                    server = self.pick()
                    if server is not None:
                        job = self.pending.popleft()
                        prompt_id = uuid.uuid4().hex
                        server.running[prompt_id] = job
                        server.finished[prompt_id] = asyncio.Event()
                        self.dispatch_count[server.url] += 1
                        task = asyncio.create_task(self.run_job(job, server, prompt_id))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        continue
                waiters = [asyncio.create_task(self.wake.wait())] + [
                    asyncio.create_task(s.gone.wait()) for s in self.servers if s.alive
                ]
                await asyncio.wait(waiters, timeout=5, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
            return self.results
        finally:
            for task in tasks:
                task.cancel()
            for server in self.servers:
                if server.running and server.alive:
                    await server.forget(list(server.running))

    # -- one job on one server --------------------------------------------------------------------------------
    async def run_job(self, job: Job, server: Server, prompt_id: str) -> None:
        attempt = {"server": server.url, "prompt_id": prompt_id, "submitted_at": time.time()}
        job.attempts.append(attempt)
        job.dispatched = time.monotonic()
        try:
            extra = {"extra_pnginfo": {"workflow": job.workflow_ui}} if job.workflow_ui else {}
            await server.submit(job.prompt, prompt_id, extra)
            entry = await self.wait(server, prompt_id)
            status = entry.get("status") or {}
            if status.get("status_str") == "error":
                self.finish(job, "execution_error", execution_message(entry), server=server, entry=entry)
                return
            fetch_started = time.monotonic()
            files = await self.download(server, job, entry)
            missing = outputs.missing_outputs(entry)
            self.finish(
                job,
                "missing_outputs" if missing else "ok",
                f"output {', '.join(missing)} produced nothing" if missing else None,
                server=server,
                entry=entry,
                files=files,
                download_s=time.monotonic() - fetch_started,
            )
        except Rejected as err:
            self.finish(job, "validation_error", str(err), server=server, details=err.details)
        except JobTimeout:
            await server.forget([prompt_id])
            self.finish(
                job,
                "timeout",
                f"no progress for {self.timeout:.0f} s on {server.url} (raise --timeout, or 0 for no limit)",
                server=server,
            )
        except ServerGone as err:
            self.requeue(job, server, str(err))
        finally:
            server.running.pop(prompt_id, None)
            server.finished.pop(prompt_id, None)
            self.wake.set()

    async def wait(self, server: Server, prompt_id: str) -> dict:
        """The prompt's /history entry once it is finished; woken by the websocket, polled as a fallback."""
        event = server.finished[prompt_id]
        submitted = time.monotonic()
        missing_since = None
        while True:
            event.clear()
            if not server.alive:
                raise ServerGone(server.gone_reason)
            try:
                entry = await server.history(prompt_id)
            except ServerGone:
                if not server.alive:
                    raise
                entry = None
            if entry is not None:
                status = entry.get("status") or {}
                if status.get("completed") or status.get("status_str") == "error" or not status:
                    return entry
            elif await self.lost(server, prompt_id):
                missing_since = missing_since or time.monotonic()
                if time.monotonic() - missing_since > 3:
                    raise ServerGone(f"{server.url} no longer knows prompt {prompt_id} (restarted?)")
            else:
                missing_since = None
            poll = 5.0 if server.ws_connected else 1.0
            if self.timeout > 0:
                idle = time.monotonic() - max(self.last_activity[server.url], submitted)
                if idle >= self.timeout:
                    raise JobTimeout()
                poll = min(poll, self.timeout - idle)
            waiters = [asyncio.create_task(event.wait()), asyncio.create_task(server.gone.wait())]
            await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def lost(self, server: Server, prompt_id: str) -> bool:
        """True when the prompt is neither running nor pending there (checked only without a websocket)."""
        if server.ws_connected:
            return False
        try:
            queue = await server.get_json("/queue")
        except ServerGone:
            return False
        listed = {item[1] for key in ("queue_running", "queue_pending") for item in queue.get(key, [])}
        return prompt_id not in listed

    async def download(self, server: Server, job: Job, entry: dict) -> list[dict]:
        outputs.reset(job.dir)
        files = []
        for info in outputs.reported_files(entry, self.include_temp):
            for item, required in [(info, True)] + [(c, False) for c in outputs.companions(info)]:
                dest = outputs.local_path(job.dir, item)
                if not required and (
                    dest.exists()
                    or any(
                        f["filename"] == item["filename"] and f.get("subfolder") == item.get("subfolder") for f in files
                    )
                ):
                    continue
                got = None
                for attempt in range(3):
                    try:
                        got = await server.download(item, dest, must_exist=required)
                        break
                    except ServerGone:
                        if not server.alive or attempt == 2:
                            raise
                        await asyncio.sleep(1.0)
                if got is None:
                    continue
                size, sha = got
                files.append(
                    {
                        "node": item["node"],
                        "kind": item["kind"],
                        "filename": item["filename"],
                        "subfolder": item.get("subfolder", ""),
                        "type": item.get("type", "output"),
                        "path": dest.relative_to(job.dir).as_posix(),
                        "bytes": size,
                        "sha256": sha,
                        **({"companion_of": item["companion_of"]} if "companion_of" in item else {}),
                    }
                )
        return files

    # -- endings ----------------------------------------------------------------------------------------------
    def requeue(self, job: Job, server: Server, reason: str) -> None:
        job.attempts[-1]["error"] = reason
        if len(job.attempts) > self.max_requeues:
            self.finish(
                job, "unreachable", f"gave up after {len(job.attempts)} attempts; last: {reason}", server=server
            )
            return
        self.pending.appendleft(job)
        self.progress.job_ended(job.id, f"{job.id}: {server.url} lost it ({reason}); re-queued", advance=False)

    def finish(
        self,
        job: Job,
        status: str,
        error: str | None,
        server: Server | None = None,
        entry: dict | None = None,
        files: list[dict] | None = None,
        details: dict | None = None,
        download_s: float | None = None,
    ) -> None:
        now = time.monotonic()
        record = {
            "job": job.id,
            "index": job.index,
            "status": status,
            "server": server.url if server else None,
            "prompt_id": job.attempts[-1]["prompt_id"] if job.attempts else None,
            "graph_sha256": job.key,
            "overrides": job.overrides,
            "outputs": [{**f, "path": f"{job.dir.name}/{f['path']}"} for f in files or []],
            "timings": {
                "total_s": round(now - job.dispatched, 3) if job.dispatched else 0.0,
                **server_timings(entry),
                **({"download_s": round(download_s, 3)} if download_s is not None else {}),
            },
            "attempts": job.attempts,
            "error": error,
            **({"error_details": details} if details else {}),
        }
        if status == "ok":
            job.dir.mkdir(parents=True, exist_ok=True)
            outputs.write_marker(
                job.dir,
                {
                    "job": job.id,
                    "graph_sha256": job.key,
                    "server": record["server"],
                    "prompt_id": record["prompt_id"],
                    "outputs": files or [],
                    "finished_at": time.time(),
                },
            )
        self.manifest.write(record)
        self.results[job.id] = record
        where = f" on {record['server']}" if record["server"] else ""
        line = f"{job.id}: {status}{where}" + (
            f" ({len(files or [])} files, {record['timings']['total_s']:.1f} s)" if status == "ok" else f": {error}"
        )
        self.progress.job_ended(job.id, line, error=status != "ok")

    def skip(self, job: Job, marker: dict) -> None:
        record = {
            "job": job.id,
            "index": job.index,
            "status": "skipped",
            "server": marker.get("server"),
            "prompt_id": marker.get("prompt_id"),
            "graph_sha256": job.key,
            "overrides": job.overrides,
            "outputs": [{**f, "path": f"{job.dir.name}/{f['path']}"} for f in marker.get("outputs", [])],
            "timings": {},
            "attempts": [],
            "error": None,
        }
        self.manifest.write(record)
        self.results[job.id] = record
        self.progress.job_ended(job.id, None)


def server_timings(entry: dict | None) -> dict:
    """Queue wait and run time from the server's own timestamps in the history entry (ms since epoch)."""
    if not entry:
        return {}
    stamps = {
        kind: data.get("timestamp")
        for kind, data in (entry.get("status") or {}).get("messages", [])
        if isinstance(data, dict)
    }
    start = stamps.get("execution_start")
    end = stamps.get("execution_success") or stamps.get("execution_error") or stamps.get("execution_interrupted")
    created = (
        (entry.get("prompt") or [None, None, None, {}])[3].get("create_time")
        if isinstance(entry.get("prompt"), list) and len(entry["prompt"]) > 3 and isinstance(entry["prompt"][3], dict)
        else None
    )
    timings = {}
    if start and end:
        timings["run_s"] = round((end - start) / 1000, 3)
    if start and created:
        timings["queue_s"] = round((start - created) / 1000, 3)
    return timings
