"""Headless batch runner: one workflow, many jobs, a pool of ComfyUI servers.

ComfyUI is the execution engine; this package only submits API-format prompts over HTTP, follows them on the
websocket, downloads what they saved and records everything in a manifest. Modules:

- ``graph``: load API or UI workflows, UI -> API conversion through the server's ``/object_info``.
- ``overrides``: ``--set "Title.input=value"``, the prompt/seed/size/... shortcuts, batch files (JSONL, CSV).
- ``server``: one ComfyUI server over aiohttp (HTTP + websocket), with liveness checks.
- ``pool``: spreads jobs over servers by queue length, re-queues the jobs of a server that dies.
- ``outputs``: downloads, sha256, per-job completion markers (``--resume``), the JSONL manifest.
- ``progress``: tqdm bars from websocket progress (quiet when not on a TTY).
- ``local``: starting ComfyUI servers here (the README's main job) and the offline fixture models.
- ``ray_pool`` / ``ray_actor``: ``--ray``, the same jobs on a Ray cluster (actors owning ComfyUI servers; Ray
  places them and retries jobs whose actor died); the ``[ray]`` extra.
- ``cli``: the command line and its exit codes.

Only the standard library, aiohttp and tqdm (both installed with ComfyUI's requirements) are needed; ``--ray``
also needs Ray (``pip install -e '.[ray]'``).
"""
