"""One ComfyUI server seen from the runner: HTTP calls, the websocket, liveness.

Every call that cannot reach the server probes ``/system_stats``; when that fails too the server is marked gone
and ``ServerGone`` is raised, so the pool re-queues its jobs elsewhere. A server that answers POST /prompt with
anything but success or a validation error (HTTP 400) is treated as refusing work, which is the same thing.

ComfyUI also answers 200 when only some output nodes failed validation: it queues the others and lists the
failures in ``node_errors``. ``submit`` treats that as a validation error too (``Rejected``): the prompt is taken
off the server (nothing of a half-accepted graph runs) and the job is not retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import urllib.parse
import uuid
from pathlib import Path

import aiohttp

CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, OSError)


class ServerGone(Exception):
    """The server died, cannot be reached, or refuses work; its jobs go to the other servers."""


class Rejected(Exception):
    """POST /prompt answered HTTP 400: the graph failed validation. Not retried."""

    def __init__(self, message: str, details: dict):
        super().__init__(message)
        self.details = details


class Server:
    """A ComfyUI server: submit prompts, read history, download files, follow the websocket."""

    def __init__(self, url: str, session: aiohttp.ClientSession, on_message=None, probe_tries: int = 3):
        self.url = url.rstrip("/")
        self.session = session
        self.client_id = uuid.uuid4().hex
        self.on_message = on_message or (lambda server, kind, data: None)
        self.probe_tries = probe_tries
        self.gone = asyncio.Event()
        self.gone_reason = ""
        self.ws_connected = False
        self.reported_queue = 0
        self.running: dict[str, object] = {}  # prompt id -> job, prompts of ours not finished here
        self.finished: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"Server({self.url})"

    @property
    def alive(self) -> bool:
        return not self.gone.is_set()

    @property
    def load(self) -> int:
        """Queue length used for dispatch: the server's own count (all clients) or ours, whichever is larger."""
        return max(len(self.running), self.reported_queue)

    def mark_gone(self, reason: str) -> None:
        if not self.gone.is_set():
            self.gone_reason = reason
            self.gone.set()
            for event in self.finished.values():
                event.set()

    async def probe(self) -> bool:
        """True when /system_stats answers within a few tries (a busy server still answers)."""
        for attempt in range(self.probe_tries):
            try:
                async with self.session.get(self.url + "/system_stats", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    if r.status == 200:
                        return True
            except CONNECTION_ERRORS:
                pass
            if attempt + 1 < self.probe_tries:
                await asyncio.sleep(0.5)
        return False

    async def _lost(self, what: str, err: BaseException) -> ServerGone:
        if not self.gone.is_set() and await self.probe():
            return ServerGone(f"{what}: {err!r} (the server still answers; treating it as refusing work)")
        self.mark_gone(f"{what}: {type(err).__name__} {err}".strip())
        return ServerGone(self.gone_reason)

    async def get_json(self, path: str, timeout: float = 60):
        if self.gone.is_set():
            raise ServerGone(self.gone_reason)
        try:
            async with self.session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                r.raise_for_status()
                return await r.json(content_type=None)
        except CONNECTION_ERRORS as err:
            raise await self._lost(f"GET {path}", err) from None
        except aiohttp.ClientResponseError as err:
            raise await self._lost(f"GET {path} -> HTTP {err.status}", err) from None

    async def device_types(self) -> set[str]:
        """The kinds of device the server computes on ("cpu", "cuda", "mps", ...), from /system_stats."""
        stats = await self.get_json("/system_stats")
        return {str(device.get("type", "")).lower() for device in stats.get("devices", [])} - {""}

    async def object_info(self) -> dict:
        return await self.get_json("/object_info", timeout=180)

    async def submit(self, prompt: dict, prompt_id: str, extra_data: dict) -> None:
        """POST /prompt with our prompt id; Rejected on a validation error (HTTP 400, or 200 with node_errors:
        some output nodes dropped), ServerGone when it cannot be queued."""
        if self.gone.is_set():
            raise ServerGone(self.gone_reason)
        payload = {"prompt": prompt, "prompt_id": prompt_id, "client_id": self.client_id, "extra_data": extra_data}
        try:
            async with self.session.post(
                self.url + "/prompt", json=payload, timeout=aiohttp.ClientTimeout(total=120)
            ) as r:
                body = await r.text()
                answer = _json_or_text(body) if r.status == 200 else None
                if r.status == 200 and isinstance(answer, dict) and answer.get("node_errors"):
                    await self.forget([prompt_id])  # ComfyUI queued the valid rest of the graph: take it off
                    raise Rejected(dropped_message(answer), answer)
                if r.status == 200:
                    return
                if r.status == 400:
                    details = _json_or_text(body)
                    raise Rejected(validation_message(details), details if isinstance(details, dict) else {})
                err = RuntimeError(f"HTTP {r.status}: {body[:300]}")
        except CONNECTION_ERRORS as exc:
            raise await self._lost("POST /prompt", exc) from None
        self.mark_gone(f"POST /prompt refused: {err}")
        raise ServerGone(self.gone_reason)

    async def history(self, prompt_id: str) -> dict | None:
        return (await self.get_json(f"/history/{prompt_id}")).get(prompt_id)

    async def forget(self, prompt_ids: list[str]) -> None:
        """Take prompts of ours off the server (best effort: on timeout, Ctrl-C): delete the waiting ones from its
        queue and interrupt the running one, by prompt id, so other clients' work is never touched."""
        calls = [("/queue", {"delete": prompt_ids})] + [("/interrupt", {"prompt_id": pid}) for pid in prompt_ids]
        for path, payload in calls:
            try:
                async with self.session.post(self.url + path, json=payload, timeout=aiohttp.ClientTimeout(total=5)):
                    pass
            except CONNECTION_ERRORS:
                return

    async def download(self, file_info: dict, dest: Path, must_exist: bool = True) -> tuple[int, str] | None:
        """Stream one output file into `dest`; return (bytes, sha256), or None when absent and not required."""
        query = urllib.parse.urlencode({k: file_info.get(k) or "" for k in ("filename", "subfolder", "type")})
        if self.gone.is_set():
            raise ServerGone(self.gone_reason)
        digest, size = hashlib.sha256(), 0
        partial = dest.with_name(dest.name + ".part")
        try:
            async with self.session.get(f"{self.url}/view?{query}", timeout=aiohttp.ClientTimeout(total=600)) as r:
                if r.status == 404 and not must_exist:
                    return None
                if r.status != 200:
                    raise ServerGone(f"GET /view {file_info.get('filename')} -> HTTP {r.status}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(partial, "wb") as out:
                    async for chunk in r.content.iter_chunked(1 << 20):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
        except CONNECTION_ERRORS as err:
            partial.unlink(missing_ok=True)
            raise await self._lost(f"GET /view {file_info.get('filename')}", err) from None
        os.replace(partial, dest)
        return size, digest.hexdigest()

    async def watch(self, connected: asyncio.Event) -> None:
        """Follow the websocket until the server is gone; `connected` is set after the first attempt."""
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        while not self.gone.is_set():
            try:
                async with self.session.ws_connect(
                    f"{ws_url}/ws?clientId={self.client_id}", heartbeat=30, timeout=aiohttp.ClientWSTimeout(ws_close=10)
                ) as ws:
                    self.ws_connected = True
                    connected.set()
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self._handle(message.data)
                        elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
            except CONNECTION_ERRORS + (aiohttp.WSServerHandshakeError,):
                pass
            self.ws_connected = False
            self.reported_queue = 0  # no status messages any more: dispatch on our own count until reconnected
            connected.set()
            if self.gone.is_set():
                return
            if not await self.probe():
                self.mark_gone("the server stopped answering (websocket closed, /system_stats unreachable)")
                return
            await asyncio.sleep(1.0)

    def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return
        kind, data = message.get("type"), message.get("data") or {}
        if kind == "status":
            self.reported_queue = int(data.get("status", {}).get("exec_info", {}).get("queue_remaining", 0) or 0)
        prompt_id = data.get("prompt_id")
        done = kind in ("execution_success", "execution_error", "execution_interrupted") or (
            kind == "executing" and data.get("node") is None and prompt_id
        )
        if done and prompt_id in self.finished:
            self.finished[prompt_id].set()
        self.on_message(self, kind, data)


def _json_or_text(body: str):
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


def validation_message(details) -> str:
    """One readable line from ComfyUI's 400 answer: the error plus every node error, each once.

    ComfyUI repeats a node's ``validate_inputs`` message for every input the function names, as
    ``<input> - <message>``: that prefix is dropped and repeats are shown once.
    """
    if not isinstance(details, dict):
        return str(details)[:500]
    error = details.get("error") or {}
    parts = [error.get("message", "") + (f": {error['details']}" if error.get("details") else "")]
    for node_id, node_error in (details.get("node_errors") or {}).items():
        for item in node_error.get("errors", []):
            text = str(item.get("details") or "")
            named = f"{(item.get('extra_info') or {}).get('input_name')} - "
            if item.get("type") == "custom_validation_failed" and text.startswith(named):
                text = text[len(named) :]
            where = f"node {node_id} ({node_error.get('class_type')})"
            parts.append(f"{where}: {item.get('message')}" + (f" - {text}" if text else ""))
    return "; ".join(dict.fromkeys(p for p in parts if p)) or json.dumps(details)[:500]


def dropped_message(answer: dict) -> str:
    """A 200 answer with node_errors: which output nodes the server dropped, and why."""
    dropped = sorted(
        {str(o) for error in answer["node_errors"].values() for o in error.get("dependent_outputs") or []},
        key=lambda o: (len(o), o),
    )
    where = f"output node{'s' if len(dropped) > 1 else ''} {', '.join(dropped)}" if dropped else "output nodes"
    return f"the server dropped {where} (failed validation): {validation_message(answer)}"


def execution_message(entry: dict) -> str:
    """The server's own words for a failed prompt, from its /history entry."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return (
                f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                f"{data.get('exception_type')}: {data.get('exception_message')}".strip()
            )
        if kind == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return f"prompt failed: {entry.get('status')}"
