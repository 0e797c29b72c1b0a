"""Headless ComfyUI: start a server with this pack linked in, post API-format workflows, fetch outputs.

Used by the batch runner (scripts/comfy_runner/local.py starts servers with it) and the server tests;
`EventStream` reads the websocket's messages (progress) for the robustness suite and scripts/robustness_probe.py.
Standard library only (plus the server's own process), so it runs from any Python.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_DIR_NAME = "syncdiffusion-ldm3d"
IMPORT_FAILURE_MARKERS = ("(IMPORT FAILED)", "Error while calling comfy_entrypoint")


class WorkflowError(RuntimeError):
    """A workflow was rejected or failed on the server; the message carries the server's words."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_base(base: Path, models: Path | None, inputs: Path | None = None) -> Path:
    """Make a ComfyUI --base-directory: custom_nodes/<pack> links to this repo, models/ links or holds models."""
    for sub in ("custom_nodes", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if link.is_symlink() or link.exists():
        if link.resolve() != REPO_ROOT:
            link.unlink()
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    if models is not None:
        target = base / "models"
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        target.symlink_to(models.resolve(), target_is_directory=True)
    if inputs is not None and inputs.is_dir():
        for item in inputs.iterdir():
            dest = base / "input" / item.name
            if not dest.exists():  # a copy: the pack refuses input files that are links leaving input/
                shutil.copy(item.resolve(), dest)
    return base


@dataclass
class ComfyServer:
    """A ComfyUI process started headless (on the CPU unless `cpu` is False); stop() kills it by PID."""

    comfyui_dir: Path
    base: Path
    python: str = sys.executable
    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    cpu: bool = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> ComfyServer:
        self.log_path = self.base / f"comfyui-{self.port}.log"
        cmd = [
            self.python,
            "main.py",
            *(("--cpu",) if self.cpu else ()),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(self.base),
            "--disable-auto-launch",
            "--disable-api-nodes",
            "--database-url",
            "sqlite:///:memory:",
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, cwd=self.comfyui_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                ComfyClient(self.url).get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pack_import_errors(self) -> list[str]:
        """Log lines saying this pack failed to import or its entry point raised."""
        return [
            line
            for line in self.log_text().splitlines()
            if PACK_DIR_NAME in line and any(marker in line for marker in IMPORT_FAILURE_MARKERS)
        ]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def __enter__(self) -> ComfyServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class ComfyClient:
    """Minimal client of ComfyUI's HTTP API (POST /prompt, GET /history, GET /view, POST /interrupt)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, path: str, payload, timeout: float = 30):
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                return json.loads(body) if body else None
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            raise WorkflowError(f"POST {path} -> HTTP {err.code}: {body}") from None

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=120)

    def queue(self, prompt: dict, workflow_ui: dict | None = None) -> str:
        extra = {"extra_pnginfo": {"workflow": workflow_ui}} if workflow_ui else {}
        answer = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id, "extra_data": extra})
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 900, poll: float = 0.5) -> dict:
        """Wait for a prompt to finish; return its /history entry or raise WorkflowError with the server's error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if (
                entry
                and entry.get("status", {}).get("completed") is not None
                and (entry["status"].get("completed") or entry["status"].get("status_str") == "error")
            ):
                if entry["status"].get("status_str") != "success":
                    raise WorkflowError(_execution_error_text(entry))
                return entry
            time.sleep(poll)
        raise WorkflowError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, workflow_ui: dict | None = None, timeout: float = 900) -> dict:
        return self.wait(self.queue(prompt, workflow_ui), timeout=timeout)

    def interrupt(self) -> None:
        self.post_json("/interrupt", {})

    def download(self, file_info: dict) -> bytes:
        query = urllib.parse.urlencode({k: file_info.get(k, "") for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=60) as response:
            return response.read()


class EventStream:
    """ComfyUI's /ws messages for one client id, read in a thread (a minimal RFC 6455 client)."""

    def __init__(self, url: str, client_id: str):
        parts = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:80]!r}")
        self.sock.settimeout(None)
        self.events: list[tuple[float, str, dict]] = []
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body)

    def _read(self) -> None:
        message, kind = b"", 0
        try:
            while True:
                b0, b1 = self._exact(2)
                length = b1 & 0x7F
                if length == 126:
                    length = struct.unpack(">H", self._exact(2))[0]
                elif length == 127:
                    length = struct.unpack(">Q", self._exact(8))[0]
                mask = self._exact(4) if b1 & 0x80 else None
                payload = self._exact(length)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                opcode = b0 & 0x0F
                if opcode == 8:
                    break
                if opcode == 9:
                    self._send(10, payload[:125])
                    continue
                if opcode in (1, 2):
                    message, kind = payload, opcode
                elif opcode == 0:
                    message += payload
                if b0 & 0x80 and kind == 1:
                    event = json.loads(message)
                    self.events.append((time.monotonic(), event.get("type", ""), event.get("data") or {}))
        except (ConnectionError, OSError, ValueError):
            pass
        self.closed = True

    def progress(self, prompt_id: str, node: str | None, since: float = 0.0) -> int:
        return sum(
            1
            for t, kind, data in self.events
            if kind == "progress" and t >= since and data.get("prompt_id") == prompt_id
            if node is None or data.get("node") == node
        )

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def output_files(history_entry: dict) -> list[dict]:
    """Every file a finished prompt reported in its outputs (images, meshes, ...), with the node id."""
    files = []
    for node_id, ui in history_entry.get("outputs", {}).items():
        for values in ui.values():
            if isinstance(values, list):
                for item in values:
                    if isinstance(item, dict) and "filename" in item:
                        files.append({**item, "node": node_id})
    return files


def _execution_error_text(entry: dict) -> str:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return (
                f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                f"{data.get('exception_type')}: {data.get('exception_message')}"
            )
        if kind == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return f"prompt failed: {entry.get('status')}"
