"""Run a ComfyUI workflow headless: one job or a batch, on one server or spread over several.

    python scripts/run_batch.py [WORKFLOW] [--url http://host:port ...] [--batch jobs.jsonl|jobs.csv]
        [--set "Node title.input=value" ...] [--prompt TEXT] [--negative TEXT] [--seed N] [--size WxH]
        [--steps N] [--checkpoint NAME] [--output-dir DIR] [--resume] [--offline-fixtures] [--full]

WORKFLOW is an API-format file (its UI twin <name>.json is embedded in the PNGs) or a UI-format file, converted
through the server's /object_info. Without --url, ComfyUI is started here (on the GPU when torch sees one) with
this pack linked in. When no server has a GPU, the CPU preset shrinks the graph (one line says what changed;
--full runs the shipped settings).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import time
from pathlib import Path

import aiohttp

from . import outputs
from .graph import WorkflowFormatError, load_workflow
from .overrides import OverrideError, apply_row, apply_set, apply_shortcut, parse_set, read_batch
from .pool import Job, Pool
from .presets import CPU_PRESET, shrink
from .progress import Progress
from .server import Server

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "api" / "panorama_360_stereo.api.json"

EXIT_OK, EXIT_USAGE, EXIT_VALIDATION, EXIT_EXECUTION, EXIT_UNREACHABLE, EXIT_LOCAL_SERVER = 0, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every job succeeded (or was already complete with --resume)
  {EXIT_USAGE}    bad command line, workflow, batch file or override (nothing was run)
  {EXIT_VALIDATION}    a job failed validation (the server rejected the graph or dropped one of its output nodes,
       or a model/input file it lacks)
  {EXIT_EXECUTION}    a job failed while executing on the server, timed out, or an output node produced nothing
  {EXIT_UNREACHABLE}    servers unreachable: none answered, or jobs were left without a live server
  {EXIT_LOCAL_SERVER}    the local ComfyUI (no --url) did not start or the pack failed to import in it
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); finished jobs are recorded, --resume continues
When jobs fail in several ways the first applicable code in the order {EXIT_UNREACHABLE}, {EXIT_VALIDATION},
{EXIT_EXECUTION} wins.
The last line printed is a one-line summary."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_batch.py",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "workflow", nargs="?", type=Path, help="API or UI workflow (default: the headline panorama_360_stereo.api.json)"
    )
    parser.add_argument("--workflow", dest="workflow_opt", type=Path, help="the same as WORKFLOW")
    servers = parser.add_argument_group("servers")
    servers.add_argument(
        "--url",
        action="append",
        default=[],
        help="a running ComfyUI with this pack; repeat for several (jobs go to the one with the shortest queue)",
    )
    servers.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the jobs on Ray (pip install -e '.[ray]'): 'auto', 'ray://host:10001', or none for a local Ray "
        "started for the run; each actor owns a ComfyUI on one GPU (README: Scaling past one machine)",
    )
    servers.add_argument("--ray-actors", type=int, help="with --ray: actors (default: the cluster's GPUs, or 1)")
    servers.add_argument(
        "--ray-models", type=Path, help="with --ray: models folder on every node (default --comfyui/models)"
    )
    servers.add_argument("--ray-attach", metavar="URL", help="with --ray: actors use this ComfyUI on their node")
    servers.add_argument(
        "--local-servers",
        type=int,
        default=1,
        help="without --url: how many ComfyUI servers to start here (CPU; default 1)",
    )
    servers.add_argument(
        "--comfyui",
        type=Path,
        default=Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache/ComfyUI")),
        help="ComfyUI folder for local servers (default: COMFYUI_DIR or the bootstrapped one)",
    )
    servers.add_argument(
        "--offline-fixtures",
        action="store_true",
        help="local servers use the random-weight "
        "fixtures under the expected model names (no downloads; pictures are noise)",
    )
    servers.add_argument(
        "--fixtures", type=Path, default=Path(os.environ.get("SDL3D_FIXTURES", REPO_ROOT / ".cache/fixtures"))
    )
    servers.add_argument(
        "--cpu", action="store_true", help="without --url: start the local servers on the CPU even if a GPU is seen"
    )
    servers.add_argument(
        "--preset",
        choices=("auto", "cpu", "full"),
        default="auto",
        help="auto (default): the CPU preset when no server has a GPU, else the workflow's own settings; cpu: "
        f"always shrink (widest image {CPU_PRESET.max_width} px, <= {CPU_PRESET.steps} steps, <= "
        f"{CPU_PRESET.sync_steps} sync steps, LPIPS at {CPU_PRESET.lpips_resolution} px, views overlapping by half); "
        "full: the shipped settings everywhere. --set/--size/--steps and batch rows apply after the preset",
    )
    servers.add_argument("--full", action="store_true", help="the same as --preset full")
    jobs = parser.add_argument_group("jobs and overrides (applied to every job; batch rows override them)")
    jobs.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="set an input by node id, title, class or display name, e.g. 'SyncDiffusion KSampler.seed=7'",
    )
    jobs.add_argument("--prompt", help="text of the encoder(s) feeding the samplers' positive input")
    jobs.add_argument("--negative", help="text of the encoder(s) feeding the samplers' negative input")
    jobs.add_argument("--seed", help="every seed / noise_seed")
    jobs.add_argument("--size", help="WIDTHxHEIGHT of every node with width and height (the latent size)")
    jobs.add_argument("--steps", help="every sampler's steps")
    jobs.add_argument("--checkpoint", help="every ckpt_name (or an LDM3D loader's model_name)")
    jobs.add_argument(
        "--batch",
        type=Path,
        help="JSONL (one object a line) or CSV (header row) of jobs; keys: id, "
        "prompt, negative, seed, size, steps, checkpoint, 'Node.input', set",
    )
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--output-dir", type=Path, help="where <job id>/ folders and manifest.jsonl go (default .cache/outputs/<time>)"
    )
    out.add_argument("--manifest", type=Path, help="manifest path (default <output-dir>/manifest.jsonl)")
    out.add_argument("--resume", action="store_true", help="skip jobs whose outputs are complete in --output-dir")
    out.add_argument("--include-temp", action="store_true", help="also download preview (temp) images")
    run = parser.add_argument_group("running")
    run.add_argument("--depth", type=int, default=2, help="jobs queued per server at most (default 2)")
    run.add_argument(
        "--timeout",
        type=float,
        default=1200,
        help="give up on a job when its server has shown no progress (no step, no node finished) for this many "
        "seconds (default 1200; 0 = never). A job that keeps making progress is never cut off",
    )
    run.add_argument(
        "--log-every",
        type=float,
        default=10,
        help="without bars (logs, CI): print each running job's step progress this often, in seconds (default 10)",
    )
    run.add_argument(
        "--max-requeues",
        type=int,
        default=3,
        help="attempts on lost servers before a job is recorded unreachable (default 3)",
    )
    run.add_argument(
        "--no-model-check",
        action="store_true",
        help="do not check model/input names against the first server's choices before submitting",
    )
    run.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="bars (auto: only on a TTY)")
    run.add_argument("--quiet", action="store_true", help="no per-job lines, only errors and the summary")
    return parser


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    path = ns.workflow_opt or ns.workflow or DEFAULT_WORKFLOW
    try:
        workflow = load_workflow(path)
        rows = read_batch(ns.batch) if ns.batch else [{}]
        for spec in ns.sets:
            parse_set(spec)
    except (WorkflowFormatError, OverrideError) as err:
        return _fail(EXIT_USAGE, f"error: {err}")
    if ns.resume and not ns.output_dir:
        return _fail(EXIT_USAGE, "error: --resume needs the --output-dir of the run to resume")
    out_dir = (ns.output_dir or REPO_ROOT / ".cache" / "outputs" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    if ns.ray is not None:
        from .ray_pool import run_ray

        if ns.url:
            return _fail(
                EXIT_USAGE, "error: --ray starts its own servers (or uses --ray-attach); --url is the HTTP pool"
            )
        try:
            return run_ray(ns, workflow, rows, out_dir)
        except KeyboardInterrupt:
            return _fail(EXIT_INTERRUPTED, f"interrupted; finished jobs are in {out_dir} (use --resume)")
    local, urls = [], list(ns.url)
    try:
        if not urls:
            from .local import start_local_servers

            try:
                local = start_local_servers(
                    max(1, ns.local_servers),
                    ns.comfyui.resolve(),
                    ns.offline_fixtures,
                    ns.fixtures.resolve(),
                    lambda text: print(text, file=sys.stderr, flush=True),
                    cpu=ns.cpu,
                )
            except (RuntimeError, OSError) as err:
                return _fail(EXIT_LOCAL_SERVER, f"error: local ComfyUI did not start: {err}")
            urls = [server.url for server in local]
        return asyncio.run(run(ns, workflow, rows, urls, out_dir, models_hint=_models_hint(ns, local)))
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, f"interrupted; finished jobs are in {out_dir} (use --resume)")
    finally:
        for server in local:
            server.stop()


async def run(ns, workflow, rows, urls, out_dir: Path, models_hint: str) -> int:
    progress = Progress(total=len(rows), mode=ns.progress, quiet=ns.quiet, log_every=ns.log_every)
    async with aiohttp.ClientSession() as session:
        servers = [Server(url, session) for url in dict.fromkeys(urls)]
        watchers = await _connect(servers, progress)
        watchers.append(asyncio.create_task(progress.log_periodically()))
        try:
            alive = [s for s in servers if s.alive]
            if not alive:
                progress.close()
                reasons = "; ".join(f"{s.url}: {s.gone_reason}" for s in servers)
                _record_unreachable(rows, ns.manifest or out_dir / "manifest.jsonl", reasons)
                return _fail(
                    EXIT_UNREACHABLE,
                    f"FAILED: no server reachable ({reasons}); {len(rows)} jobs "
                    f"recorded as unreachable in {ns.manifest or out_dir / 'manifest.jsonl'}",
                )
            object_info = await alive[0].object_info()
            lpips_available = await _lpips_files(alive[0], not ns.url)
            ns.shrink_to = await _preset(ns, alive, progress)
            try:
                if workflow.needs_conversion:
                    workflow.convert(object_info)
                jobs = make_jobs(ns, workflow, rows, object_info, out_dir)
                _say_preset(ns, jobs, progress)
            except (WorkflowFormatError, OverrideError) as err:
                progress.close()
                return _fail(EXIT_USAGE, f"error: {err}")
            manifest = outputs.Manifest(ns.manifest or out_dir / "manifest.jsonl")
            pool = Pool(
                servers,
                out_dir,
                manifest,
                progress,
                depth=ns.depth,
                timeout=ns.timeout,
                max_requeues=ns.max_requeues,
                include_temp=ns.include_temp,
            )
            todo = []
            for job in jobs:
                marker = outputs.completed(job.dir, job.key) if ns.resume else None
                problems = [] if ns.no_model_check else _missing(job.prompt, object_info, models_hint, lpips_available)
                if marker:
                    pool.skip(job, marker)
                elif problems:
                    pool.finish(job, "validation_error", "; ".join(problems))
                else:
                    todo.append(job)
            try:
                await pool.run(todo)
            finally:
                manifest.close()
                progress.close()
        finally:
            for server in servers:
                server.mark_gone("run finished")
            for watcher in watchers:
                watcher.cancel()
    return summarize(pool.results, out_dir, manifest.path)


async def _connect(servers: list[Server], progress: Progress) -> list[asyncio.Task]:
    """Start each server's websocket watcher; a server that does not answer /system_stats is marked gone."""
    watchers = []
    probes = await asyncio.gather(*(s.probe() for s in servers))
    for server, ok in zip(servers, probes):
        if not ok:
            server.mark_gone("unreachable (no answer from /system_stats)")
            progress.say(f"warning: {server.url} is unreachable; continuing without it", error=True)
            continue
        connected = asyncio.Event()
        watchers.append(asyncio.create_task(server.watch(connected)))
        try:
            await asyncio.wait_for(connected.wait(), timeout=15)
        except asyncio.TimeoutError:
            pass
    return watchers


def make_jobs(ns, workflow, rows: list[dict], object_info: dict, out_dir: Path) -> list[Job]:
    """One Job per batch row: the workflow with the global overrides, then the row's, applied."""
    jobs, seen = [], set()
    for index, row in enumerate(rows):
        prompt, changes = copy.deepcopy(workflow.api), {}
        if getattr(ns, "offline_fixtures", False):
            from .local import offline_prompt

            prompt = offline_prompt(prompt)
        if getattr(ns, "shrink_to", None) is not None:  # recorded in `changes` like any override
            shrunk, ns.preset_changes = shrink(prompt, ns.shrink_to)
            for node_id, node in shrunk.items():
                changes.update(
                    {(node_id, k): v for k, v in node["inputs"].items() if prompt[node_id]["inputs"].get(k) != v}
                )
            prompt = shrunk
        for key in ("prompt", "negative", "seed", "size", "steps", "checkpoint"):
            apply_shortcut(prompt, key, getattr(ns, key), object_info, changes)
        for spec in ns.sets:
            apply_set(prompt, spec, object_info, changes)
        apply_row(prompt, row, object_info, changes)
        job_id = job_id_for(row, index)
        if job_id in seen:
            raise OverrideError(f"{row.get('_where', 'batch')}: job id '{job_id}' is used twice")
        seen.add(job_id)
        shown = {k: v for k, v in row.items() if k != "_where"}
        jobs.append(
            Job(
                index=index,
                id=job_id,
                prompt=prompt,
                workflow_ui=workflow.ui_with(changes),
                overrides=shown,
                key=outputs.graph_hash(prompt),
                dir=out_dir / job_id,
            )
        )
    return jobs


def job_id_for(row: dict, index: int) -> str:
    """The row's 'id' (made safe for a folder name) or job-0001, job-0002, ... by position in the batch."""
    return outputs.safe_name(row["id"]) if row.get("id") not in (None, "") else f"job-{index + 1:04d}"


async def _preset(ns, servers: list[Server], progress: Progress):
    """The Shrink to apply to every job (None: the workflow's own settings), from --preset / --full."""
    choice = "full" if ns.full else ns.preset
    ns.preset_reason = ""
    if choice == "auto":
        devices = [await server.device_types() for server in servers]
        if all(types and types <= {"cpu"} for types in devices):
            choice, ns.preset_reason = "cpu", "no server has a GPU"
        else:
            choice = "full"
    return CPU_PRESET if choice == "cpu" else None


def _say_preset(ns, jobs: list[Job], progress: Progress) -> None:
    """One line saying exactly what the CPU preset shrank and how to run the full settings."""
    if getattr(ns, "shrink_to", None) is None or not jobs:
        return
    changes = ", ".join(getattr(ns, "preset_changes", [])) or "nothing (already small)"
    why = f" ({ns.preset_reason})" if ns.preset_reason else ""
    progress.say(
        f"CPU preset{why}: {changes}; the workflow's own settings: add --full (hours on a CPU, minutes on a GPU)"
    )


def _record_unreachable(rows: list[dict], manifest_path: Path, reasons: str) -> None:
    """Nothing is lost even when no server answers: every job gets its record."""
    manifest = outputs.Manifest(manifest_path)
    for index, row in enumerate(rows):
        job_id = job_id_for(row, index)
        manifest.write(
            {
                "job": job_id,
                "index": index,
                "status": "unreachable",
                "server": None,
                "prompt_id": None,
                "overrides": {k: v for k, v in row.items() if k != "_where"},
                "outputs": [],
                "timings": {},
                "attempts": [],
                "error": f"no server reachable ({reasons})",
            }
        )
    manifest.close()


def _models_hint(ns, local) -> str:
    if local:
        return str(Path(local[0].base) / "models")
    return "<the server's ComfyUI>/models"


def _missing(prompt: dict, object_info: dict, models_hint: str, lpips_available: list[str] | None) -> list[str]:
    from .local import missing_inputs

    return missing_inputs(prompt, object_info, models_hint, lpips_available)


async def _lpips_files(server, local: bool) -> list[str] | None:
    """LPIPS backbones the server can load (its models/lpips, plus the torch hub cache of a server we started);
    None when the server has no such route (the check is then skipped)."""
    try:
        files = list(await server.get_json("/models/lpips"))
    except Exception:  # noqa: BLE001 - an old server without the route: skip this check
        return None
    if local:
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        files += [p.name for p in hub.glob("*.pth")] if hub.is_dir() else []
    return files


def summarize(results: dict[str, dict], out_dir: Path, manifest_path: Path) -> int:
    counts: dict[str, int] = {}
    for record in results.values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    statuses = set(counts)
    code = (
        EXIT_UNREACHABLE
        if "unreachable" in statuses
        else EXIT_VALIDATION
        if "validation_error" in statuses
        else EXIT_EXECUTION
        if statuses & {"execution_error", "timeout", "missing_outputs"}
        else EXIT_OK
    )
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    line = (
        f"{'done' if code == EXIT_OK else 'FAILED'}: {len(results)} jobs ({parts}); outputs in {out_dir}; "
        f"manifest {manifest_path}"
    )
    if len(results) == 1:
        for item in next(iter(results.values()))["outputs"]:
            print(f"  {item['path']}", flush=True)
    print(line, file=sys.stdout if code == EXIT_OK else sys.stderr, flush=True)
    return code


def _fail(code: int, message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    return code
