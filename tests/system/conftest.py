"""Fixtures for the system tests: start the real `citadel serve` on a free loopback port and stop it.

Environment:
  CITADEL_BIN         the citadel binary (default: build/citadel)
  CITADEL_TEST_MODEL  model spec (default: the pulled SmolLM2 GGUF; `debug:bytes` runs the suite on the fake model)
The suite skips cleanly when the model file is absent.
"""
import os
import pathlib
import queue
import signal
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _model_spec():
    spec = os.environ.get("CITADEL_TEST_MODEL")
    if spec:
        return spec
    candidates = [
        pathlib.Path(os.environ.get("CITADEL_MODELS", pathlib.Path.home() / ".cache/citadel/models")) / MODEL_FILE,
        pathlib.Path("/tmp/models") / MODEL_FILE,
    ]
    for c in candidates:
        if c.is_file():
            return str(c)
    pytest.skip(f"model file {MODEL_FILE} not found (run `citadel pull smollm2-135m`)", allow_module_level=True)


def _binary():
    b = pathlib.Path(os.environ.get("CITADEL_BIN", ROOT / "build" / "citadel"))
    if not b.is_file():
        pytest.skip(f"{b} not built", allow_module_level=True)
    return str(b)


class Server:
    def __init__(self, args, ready_timeout=180):
        self.args = [_binary(), "serve", "--port", "0", "--host", "127.0.0.1"] + args
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()
        self.port = None
        deadline = time.time() + ready_timeout
        while time.time() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "listening on http://" in line:
                self.port = int(line.rsplit(":", 1)[1])
            if line.strip() == "citadel serve: ready":
                break
        else:
            self.stop()
            raise RuntimeError("server not ready in time:\n" + "".join(self.stderr[-20:]))
        if self.proc.poll() is not None or self.port is None:
            time.sleep(0.2)
            err = "".join(self.stderr[-20:])
            raise RuntimeError(f"server failed to start ({self.proc.returncode}):\n{err}")
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _pump(self, stream, is_stdout):
        for line in stream:
            (self.lines.put if is_stdout else self.stderr.append)(line)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def model_spec():
    return _model_spec()


@pytest.fixture(scope="session")
def server(model_spec):
    s = Server(["--model", model_spec, "--served-model-name", "smollm2", "--max-queue", "64",
                "--max-context", "2048", "--kv-memory-mb", "256"])
    yield s
    code = s.stop()
    assert code == 0, "server did not shut down cleanly:\n" + "".join(s.stderr[-20:])


@pytest.fixture(scope="session")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model_name():
    return "smollm2"
