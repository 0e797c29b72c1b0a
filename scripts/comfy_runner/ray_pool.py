"""``run_batch.py --ray [ADDRESS]``: the same jobs on a Ray cluster, where Ray does placement and retries.

Ray (an optional extra: ``pip install -e '.[ray]'``) starts ``--ray-actors`` actors (``ray_actor.ComfyActor``),
each owning one ComfyUI server on one GPU (``num_gpus=1``; ``num_cpus=1`` on a cluster without GPUs) or attached
to one already running on its node (``--ray-attach``). Actors are created with ``max_restarts`` and
``max_task_retries``: when an actor or its node dies, Ray starts a new actor (and with it a new ComfyUI) and runs
the job again there. An actor that stays dead has its jobs handed to the others, up to ``--max-requeues``.

The driver (this module) builds the jobs exactly as the HTTP pool does (``cli.make_jobs``: preset, overrides,
batch rows, ``--resume``), keeps at most ``--depth`` jobs on each actor, writes the files an actor returns under
``<output-dir>/<job id>/`` and records every job with ``Pool.finish`` / ``Pool.skip``, so ``manifest.jsonl`` and
``job.json`` are the HTTP pool's (``server`` is the actor's ComfyUI as ``http://<node ip>:<port>``; ``attempts``
also lists attempts on actors that died, noted in the actors' ``Ledger``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from types import SimpleNamespace

from . import outputs
from .pool import Pool
from .progress import Progress
from .ray_actor import ComfyActor, Ledger
from .server import Server

RAY_VERSION = "2.60.0"  # pinned in pyproject's [ray] extra
SCRIPTS = Path(__file__).resolve().parents[1]
DIED = "the actor died mid-job (its process or node was lost); Ray restarted it and retried the job"


def import_ray():
    """Ray, or None when it is not installed."""
    try:
        import ray
    except ImportError:
        return None
    return ray


class ActorServer:
    """The bits of ``Server`` the job builder asks (object_info, devices, LPIPS files), answered by an actor."""

    def __init__(self, actor, url: str):
        self.actor, self.url = actor, url

    async def get_json(self, path: str, timeout: float = 60):
        return await self.actor.get_json.remote(path)

    async def object_info(self) -> dict:
        return await self.get_json("/object_info")

    device_types = Server.device_types


def start(ray, ns, say) -> tuple[list, list[dict], object]:
    """Connect to (or start) Ray, create the ledger and the actors; return (actors, their info, ledger)."""
    address = None if ns.ray == "local" else ns.ray
    local_cpus = max(os.cpu_count() or 1, ns.ray_actors or 1) if address is None else None
    local = {"_node_ip_address": "127.0.0.1"} if address is None else {}  # a run-local Ray stays on loopback
    context = ray.init(
        address=address,
        num_cpus=local_cpus,
        **local,
        runtime_env={"env_vars": {"PYTHONPATH": str(SCRIPTS)}},
        log_to_driver=False,
        logging_level="WARNING",
    )
    resources = ray.cluster_resources()
    gpus = 0 if ns.cpu else int(resources.get("GPU", 0))
    count = ns.ray_actors or max(1, gpus)
    dashboard = getattr(context, "dashboard_url", None)
    say(
        f"Ray {ray.__version__}: {'a local Ray started for this run' if address is None else address}, "
        f"{count} actor(s) on {'one GPU each' if gpus else 'the CPU (no GPU in the cluster)'}; "
        + (f"dashboard http://{dashboard}" if dashboard else "no dashboard (pip install 'ray[default]' for one)")
    )
    ledger_name = f"sdl3d-ledger-{uuid.uuid4().hex[:12]}"  # by name: no actor handle among the actors' arguments
    ledger = ray.remote(num_cpus=0)(Ledger).options(name=ledger_name).remote()
    resources_each = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    actor_class = ray.remote(ComfyActor).options(
        **resources_each, max_restarts=ns.max_requeues, max_task_retries=ns.max_requeues
    )
    spec = {
        "comfyui": str(ns.comfyui.resolve()),
        "models": str((ns.ray_models or ns.comfyui / "models").resolve()),
        "offline": ns.offline_fixtures,
        "fixtures": str(ns.fixtures.resolve()),
        "inputs": str(SCRIPTS.parent / "workflows" / "inputs"),
        "attach": ns.ray_attach,
    }
    actors = [actor_class.remote(spec, ledger_name) for _ in range(count)]
    infos = ray.get([actor.info.remote() for actor in actors], timeout=900)
    for index, info in enumerate(infos):
        say(f"actor {index}: ComfyUI {info['url']} (actor pid {info['pid']}, ComfyUI pid {info['comfy_pid']})")
    return actors, infos, ledger


def run_ray(ns, workflow, rows, out_dir: Path) -> int:
    from .cli import EXIT_LOCAL_SERVER, EXIT_USAGE, _fail

    ray = import_ray()
    if ray is None:
        return _fail(EXIT_USAGE, f"error: --ray needs Ray {RAY_VERSION}: pip install -e '.[ray]' (in this venv)")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    actors = []
    try:
        try:
            actors, infos, ledger = start(ray, ns, say)
        except Exception as err:  # noqa: BLE001 - Ray or the actors' ComfyUI did not come up
            return _fail(EXIT_LOCAL_SERVER, f"error: the Ray actors' ComfyUI did not start: {err}")
        return asyncio.run(drive(ray, ns, workflow, rows, out_dir, actors, infos, ledger))
    finally:
        if ray.is_initialized():
            try:
                ray.get([actor.stop.remote() for actor in actors], timeout=30)
            except Exception:  # noqa: BLE001 - best effort: the actors' watchers stop their servers anyway
                pass
            ray.shutdown()


async def drive(ray, ns, workflow, rows, out_dir: Path, actors: list, infos: list[dict], ledger) -> int:
    from .cli import EXIT_USAGE, _fail, _lpips_files, _missing, _preset, _say_preset, make_jobs, summarize
    from .graph import WorkflowFormatError
    from .overrides import OverrideError

    progress = Progress(total=len(rows), mode=ns.progress, quiet=ns.quiet, log_every=ns.log_every)
    heartbeat = asyncio.create_task(progress.log_periodically())
    first = ActorServer(actors[0], infos[0]["url"])
    try:
        object_info = await first.object_info()
        lpips_available = await _lpips_files(first, not ns.ray_attach)
        ns.shrink_to = await _preset(ns, [first], progress)
        try:
            if workflow.needs_conversion:
                workflow.convert(object_info)
            jobs = make_jobs(ns, workflow, rows, object_info, out_dir)
            _say_preset(ns, jobs, progress)
        except (WorkflowFormatError, OverrideError) as err:
            progress.close()
            return _fail(EXIT_USAGE, f"error: {err}")
        manifest = outputs.Manifest(ns.manifest or out_dir / "manifest.jsonl")
        pool = Pool([], out_dir, manifest, progress, include_temp=ns.include_temp)
        hints = "<the actors' models folder>"
        todo = []
        for job in jobs:
            marker = outputs.completed(job.dir, job.key) if ns.resume else None
            problems = [] if ns.no_model_check else _missing(job.prompt, object_info, hints, lpips_available)
            if marker:
                pool.skip(job, marker)
            elif problems:
                pool.finish(job, "validation_error", "; ".join(problems))
            else:
                todo.append(job)
        try:
            await Dispatcher(ray, ns, pool, actors, infos, ledger, progress).run(todo)
        finally:
            manifest.close()
            progress.close()
    finally:
        heartbeat.cancel()
    return summarize(pool.results, out_dir, manifest.path)


class Dispatcher:
    """At most ``depth`` jobs per live actor; results written and recorded as they come back."""

    def __init__(self, ray, ns, pool: Pool, actors: list, infos: list[dict], ledger, progress: Progress):
        self.ray, self.ns, self.pool, self.ledger, self.progress = ray, ns, pool, ledger, progress
        self.actors = actors
        self.urls = [info["url"] for info in infos]
        self.alive = [True] * len(actors)
        self.load = [0] * len(actors)
        self.requeues: dict[str, int] = {}

    async def run(self, jobs: list) -> None:
        pending, tasks = deque(jobs), {}
        while pending or tasks:
            if not any(self.alive):
                while pending:
                    job = pending.popleft()
                    job.attempts = await self.ledger.attempts_of.remote(job.id)
                    self.pool.finish(job, "unreachable", "no Ray actor left (every actor died past max_restarts)")
            while pending:
                ready = [i for i, ok in enumerate(self.alive) if ok and self.load[i] < max(1, self.ns.depth)]
                if not ready:
                    break
                index = min(ready, key=lambda i: self.load[i])
                job = pending.popleft()
                job.dispatched = time.monotonic()
                self.load[index] += 1
                self.progress.job_started(job.id, self.urls[index])
                ref = self.actors[index].run_job.remote(
                    job.id, job.prompt, self.extra(job), self.ns.timeout, self.ns.include_temp
                )
                tasks[asyncio.ensure_future(_wait(ref))] = (job, index)
            if not tasks:
                continue
            done, _ = await asyncio.wait(list(tasks), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            await self.show_steps()
            for task in done:
                job, index = tasks.pop(task)
                self.load[index] -= 1
                await self.ended(job, index, task, pending)

    @staticmethod
    def extra(job) -> dict:
        return {"extra_pnginfo": {"workflow": job.workflow_ui}} if job.workflow_ui else {}

    async def show_steps(self) -> None:
        for job_id, state in (await self.ledger.snapshot.remote()).items():
            if "max" in state:
                self.progress.job_progress(job_id, state["value"], state["max"], state["node"])
            else:
                self.progress.job_node(job_id, state["node"])

    async def ended(self, job, index: int, task: asyncio.Future, pending: deque) -> None:
        attempts = await self.ledger.attempts_of.remote(job.id)
        try:
            result = task.result()
        except self.ray.exceptions.RayActorError as err:  # restarts used up: this actor is gone for good
            self.alive[index] = False
            self.progress.say(f"actor {index} ({self.urls[index]}) is gone for good: {type(err).__name__}", True)
            return self.again(job, attempts, f"actor {index} gone past max_restarts", pending)
        except self.ray.exceptions.RayError as err:  # the actor raised (an attached server unreachable, ...)
            return self.again(job, attempts, f"{type(err).__name__}: {str(err).splitlines()[-1][:300]}", pending)
        for attempt in attempts:
            if attempt["prompt_id"] != result["prompt_id"] and not attempt.get("error"):
                attempt["error"] = DIED
        job.attempts = attempts
        if result["url"] != self.urls[index]:
            self.progress.say(f"actor {index} was restarted by Ray: {self.urls[index]} -> {result['url']}")
            self.urls[index] = result["url"]
        if len(attempts) > 1:
            self.progress.say(f"{job.id}: {len(attempts) - 1} attempt(s) lost with their actor; Ray retried it")
        server = SimpleNamespace(url=result["url"])
        if result["status"] != "ok":
            self.pool.finish(job, result["status"], result["error"], server=server, entry=result["entry"],
                             details=result["details"])  # fmt: skip
            return None
        outputs.reset(job.dir)
        files = []
        for item, data in result["files"]:
            dest = job.dir / item["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            files.append({**item, "bytes": len(data), "sha256": outputs.file_sha256(dest)})
        self.pool.finish(job, "ok", None, server=server, entry=result["entry"], files=files,
                         download_s=result.get("download_s"))  # fmt: skip
        return None

    def again(self, job, attempts: list[dict], reason: str, pending: deque) -> None:
        """Hand a job whose actor failed to the other actors, or record it unreachable past --max-requeues."""
        if attempts and not attempts[-1].get("error"):
            attempts[-1]["error"] = reason
        job.attempts = attempts
        self.requeues[job.id] = self.requeues.get(job.id, 0) + 1
        if self.requeues[job.id] > self.ns.max_requeues:
            self.pool.finish(job, "unreachable", f"gave up after {len(attempts)} attempts; last: {reason}")
            return
        pending.appendleft(job)
        self.progress.job_ended(job.id, f"{job.id}: {reason}; re-queued", advance=False)


async def _wait(ref):
    return await ref
