"""JupyterLab, as the README has readers start it: headless on loopback, the "Python 3 (otter)" kernel listed,
a notebook cell executed through the server's kernel API (REST + websocket channels, no papermill)."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from otterlib.env import REPO_ROOT
from otterlib.runner import KERNEL_NAME, ensure_kernel

STARTUP_S = 90.0
"""How long the server may take to answer (2 busy cores)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """REST calls to a local Jupyter server with a token."""

    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def wait_ready(self, proc: subprocess.Popen, log: Path) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                self.call("GET", "/api/status", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"jupyter lab did not answer within {STARTUP_S:.0f} s:\n{log.read_text()[-3000:]}")


def _execute(server: Server, kernel_id: str, code: str, timeout: float = 60.0) -> tuple[dict, str]:
    """Send ``code`` as an execute_request on the kernel's websocket; returns (execute_reply content, stdout)
    once the reply (shell channel) and the kernel's return to idle (iopub: all output sent) have arrived."""
    import websocket  # websocket-client, a dependency of jupyter_server

    url = f"ws://127.0.0.1:{server.base.rsplit(':', 1)[1]}/api/kernels/{kernel_id}/channels"
    ws = websocket.create_connection(url, header=[f"Authorization: token {server.token}"], timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "session": uuid.uuid4().hex, "username": "test",
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        stdout, reply, idle, deadline = "", None, False, time.monotonic() + timeout
        while time.monotonic() < deadline and not (reply and idle):
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                stdout += msg["content"]["text"]
            reply = msg["content"] if msg["msg_type"] == "execute_reply" else reply
            idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
        if not (reply and idle):
            pytest.fail(f"no execute_reply and idle status within {timeout:.0f} s")
        return reply, stdout
    finally:
        ws.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_jupyterlab_lists_the_otter_kernel_and_executes_a_notebook_cell(tmp_path):
    ensure_kernel()
    port, token = _free_port(), uuid.uuid4().hex
    log = tmp_path / "jupyter.log"
    env = os.environ | {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    jupyter = Path(sys.executable).with_name("jupyter")
    with log.open("w") as sink:
        proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ServerApp.open_browser=False", "--allow-root",
                                 "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
                                 f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO_ROOT / 'notebooks'}"],
                                stdout=sink, stderr=subprocess.STDOUT, env=env)
    server = Server(port, token)
    try:
        server.wait_ready(proc, log)
        specs = server.call("GET", "/api/kernelspecs")["kernelspecs"]
        assert KERNEL_NAME in specs, f"kernel {KERNEL_NAME!r} not listed: {sorted(specs)}"
        assert specs[KERNEL_NAME]["spec"]["display_name"] == "Python 3 (otter)"  # the name the README gives

        kernel = server.call("POST", "/api/kernels", {"name": KERNEL_NAME}, timeout=30)
        setup_nb = nbformat.read(REPO_ROOT / "notebooks" / "00_setup.ipynb", as_version=4)
        first_code = next(c.source for c in setup_nb.cells if c.cell_type == "code")
        reply, stdout = _execute(server, kernel["id"], first_code + "\nimport sys, otterlib\n"
                                                                    "print(profile, otterlib.__name__, sys.executable)")
        assert reply["status"] == "ok", reply
        assert stdout.split() == ["smoke", "otterlib", sys.executable]
        server.call("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
        assert server.call("GET", "/api/kernels") == []
    finally:
        try:
            server.call("POST", "/api/shutdown", timeout=10)
            proc.wait(timeout=30)
        except (urllib.error.URLError, ConnectionError, TimeoutError, subprocess.TimeoutExpired):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode is not None
