"""What runs on the Ray cluster for ``--ray``: one actor per ComfyUI server, and a ledger of attempts.

``ComfyActor`` owns one ComfyUI server (started with this pack and the given models folder on the actor's GPU, or
on the CPU when the actor has none) or attaches to one already running on its node (``attach``). Its ``run_job``
submits one prompt and waits for it with the HTTP pool's own code (``Server``, ``Pool.wait``: the websocket, the
stall limit) and ``Pool.download`` (files and mesh companions), then returns the history entry and the files'
bytes to the driver, which writes them where the HTTP pool would. A validation error, an execution error or a stall
is returned, not raised: those are not retried. When its ComfyUI dies the actor exits, so Ray restarts it (a new
server, ``max_restarts``) and retries the job on it (``max_task_retries``).

``Ledger`` is where actors note each attempt (which survives the actor that made it) and the jobs' step progress,
so the manifest lists attempts on actors that died and the driver prints the same progress lines as the HTTP pool.

Nothing here imports Ray: the driver wraps these classes with ``ray.remote`` (see ``ray_pool``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from .pool import Job, JobTimeout, Pool, node_label
from .server import Rejected, Server, ServerGone, execution_message


class _Quiet:
    """The progress sink of the actor-side Pool: progress goes to the Ledger instead."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class Ledger:
    """Attempts per job and the latest step of each running job, written by actors, read by the driver."""

    def __init__(self):
        self.attempts: dict[str, list[dict]] = {}
        self.steps: dict[str, dict] = {}

    def started(self, job_id: str, attempt: dict) -> None:
        self.attempts.setdefault(job_id, []).append(attempt)

    def step(self, job_id: str, state: dict) -> None:
        self.steps[job_id] = state

    def snapshot(self) -> dict[str, dict]:
        return dict(self.steps)

    def attempts_of(self, job_id: str) -> list[dict]:
        self.steps.pop(job_id, None)
        return list(self.attempts.get(job_id, []))


class ComfyActor:
    def __init__(self, spec: dict, ledger_name: str):
        """spec: comfyui, models (a folder, or None with offline fixtures), fixtures, offline, inputs, attach."""
        import ray

        self.ledger = ray.get_actor(ledger_name)
        self.node = ray.util.get_node_ip_address()
        self.reconstructed = ray.get_runtime_context().was_current_actor_reconstructed
        self.server = None
        if spec.get("attach"):
            self.local_url = spec["attach"].rstrip("/")
            self.comfy_pid = None
        else:
            self.server = self._start(spec, gpu=bool(ray.get_gpu_ids()))
            self.local_url = self.server.url
            self.comfy_pid = self.server.process.pid
            _watch_parent(self.comfy_pid, self.server.base.parent)
        port = self.local_url.rsplit(":", 1)[-1]
        self.url = f"http://{self.node}:{port}" if "127.0.0.1" in self.local_url else self.local_url
        self.client: Server | None = None
        self.pool: Pool | None = None
        self.running: dict[str, str] = {}  # prompt id -> job id

    @staticmethod
    def _start(spec: dict, gpu: bool):
        scripts = str(Path(__file__).resolve().parents[1])
        if scripts not in sys.path:
            sys.path.insert(0, scripts)
        from headless import ComfyServer, prepare_base

        from .local import offline_models_tree

        base = Path(tempfile.mkdtemp(prefix="sdl3d-ray-"))
        if spec.get("offline"):
            models = offline_models_tree(Path(spec["fixtures"]) / "models", base / "models_offline")
        else:
            models = Path(spec["models"])
        prepare_base(base / "server", models, Path(spec["inputs"]) if spec.get("inputs") else None)
        server = ComfyServer(Path(spec["comfyui"]), base / "server", cpu=not gpu)  # Ray sets CUDA_VISIBLE_DEVICES
        server.start(timeout=300)
        errors = server.pack_import_errors()
        if errors:
            server.stop()
            raise RuntimeError("the pack failed to load:\n" + "\n".join(errors))
        return server

    def info(self) -> dict:
        return {
            "url": self.url,
            "pid": os.getpid(),
            "comfy_pid": self.comfy_pid,
            "node": self.node,
            "host": socket.gethostname(),
            "reconstructed": self.reconstructed,
        }

    def stop(self) -> None:
        """Stop our ComfyUI and remove its scratch folder (models are links into the user's folders)."""
        if self.server is not None:
            self.server.stop()
            shutil.rmtree(self.server.base.parent, ignore_errors=True)

    async def _client(self, timeout: float, include_temp: bool) -> Server:
        if self.client is None:
            session = aiohttp.ClientSession()
            self.client = Server(self.local_url, session)
            self.pool = Pool([self.client], Path(tempfile.gettempdir()), None, _Quiet(), timeout=timeout)
            self.client.on_message = self._on_message
            connected = asyncio.Event()
            self._watcher = asyncio.create_task(self.client.watch(connected))
            try:
                await asyncio.wait_for(connected.wait(), timeout=15)
            except asyncio.TimeoutError:
                pass
        self.pool.timeout = timeout
        self.pool.include_temp = include_temp
        return self.client

    def _on_message(self, server: Server, kind: str, data: dict) -> None:
        self.pool.on_message(server, kind, data)  # the stall clock
        job = server.running.get(data.get("prompt_id"))
        if job is not None and kind in ("progress", "executing") and data.get("node") is not None:
            state = {"node": node_label(job, data.get("node")), "at": time.time()}
            if kind == "progress":
                state.update(value=int(data.get("value", 0)), max=int(data.get("max", 1)))
            self.ledger.step.remote(job.id, state)

    async def get_json(self, path: str):
        client = await self._client(1200, False)
        return await client.get_json(path, timeout=180)

    async def run_job(self, job_id: str, prompt: dict, extra: dict, timeout: float, include_temp: bool) -> dict:
        """One job on this actor's server: {'status', 'error', 'details', 'entry', 'files': [(record, bytes)]}."""
        client = await self._client(timeout, include_temp)
        prompt_id = uuid.uuid4().hex
        attempt = {"server": self.url, "prompt_id": prompt_id, "submitted_at": time.time(), "actor_pid": os.getpid()}
        await self.ledger.started.remote(job_id, attempt)
        job = Job(index=0, id=job_id, prompt=prompt, workflow_ui=None, overrides={}, key="", dir=Path())
        job.dir = Path(tempfile.mkdtemp(prefix="job-", dir=self.server.base.parent if self.server else None))
        client.running[prompt_id] = job
        client.finished[prompt_id] = asyncio.Event()
        base = {"url": self.url, "prompt_id": prompt_id, "entry": None, "files": [], "details": None, "error": None}
        try:
            await client.submit(prompt, prompt_id, extra)
            entry = await self.pool.wait(client, prompt_id)
            if (entry.get("status") or {}).get("status_str") == "error":
                return {**base, "status": "execution_error", "error": execution_message(entry), "entry": entry}
            started = time.monotonic()
            files = await self.pool.download(client, job, entry)
            data = [(item, (job.dir / item["path"]).read_bytes()) for item in files]
            return {**base, "status": "ok", "entry": entry, "files": data, "download_s": time.monotonic() - started}
        except Rejected as err:
            return {**base, "status": "validation_error", "error": str(err), "details": err.details}
        except ServerGone as err:
            if self.server is not None and self.server.process.poll() is None and client.alive:
                raise
            # Our ComfyUI is gone: end this actor so Ray starts a new one (and a new server) and retries the job.
            print(f"ComfyUI at {self.url} is gone ({err}); exiting so Ray restarts this actor", file=sys.stderr)
            os._exit(1)
        except JobTimeout:
            await client.forget([prompt_id])
            error = f"no progress for {timeout:.0f} s on {self.url} (raise --timeout, or 0 for no limit)"
            return {**base, "status": "timeout", "error": error}
        finally:
            client.running.pop(prompt_id, None)
            client.finished.pop(prompt_id, None)
            shutil.rmtree(job.dir, ignore_errors=True)


def _watch_parent(child_pid: int, scratch: Path) -> None:
    """Kill our ComfyUI (by its PID) and remove its scratch folder when this actor's process dies, however it dies
    (SIGKILL included)."""
    code = (
        "import os, shutil, sys, time\n"
        "parent, child = int(sys.argv[1]), int(sys.argv[2])\n"
        "while True:\n"
        "    time.sleep(0.5)\n"
        "    try:\n"
        "        os.kill(child, 0)\n"
        "    except OSError:\n"
        "        break\n"
        "    try:\n"
        "        os.kill(parent, 0)\n"
        "    except OSError:\n"
        "        os.kill(child, 9)\n"
        "        time.sleep(2)\n"
        "        shutil.rmtree(sys.argv[3], ignore_errors=True)\n"
        "        break\n"
    )
    subprocess.Popen(
        [sys.executable, "-c", code, str(os.getpid()), str(child_pid), str(scratch)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
