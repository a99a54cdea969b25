"""Endpoints files (autodata/endpoints.py): the format, the key file, and an LLM that follows a file as it changes.

The servers are aiohttp.web on 127.0.0.1 in the test's own event loop, checking the bearer key as vLLM does with
--api-key; requests go through the real OpenAIBackend built by LLM from models.endpoints_file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from hydra import compose, initialize_config_dir

from autodata import endpoints
from autodata.backends.base import EndpointUnreachable
from autodata.config import ModelsConfig, RootConfig, register_configs, to_typed
from autodata.endpoints import EndpointsFileError
from autodata.llm import LLM
from autodata.rundir import write_provenance
from autodata.validation import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]
register_configs()
MODEL = "served-model"
MESSAGES = [{"role": "user", "content": "ping"}]


class KeyedServer:
    """An OpenAI-compatible server that answers only with the right bearer key; records what it served."""

    def __init__(self, key: str, model: str = MODEL):
        self.key = key
        self.model = model
        self.chats = 0
        self.refused = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def _authorized(self, request: web.Request) -> bool:
        ok = request.headers.get("Authorization") == f"Bearer {self.key}"
        self.refused += not ok
        return ok

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "bad key"}, status=401)
        return web.json_response({"object": "list", "data": [{"id": self.model, "max_model_len": 4096}]})

    async def _chat(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "bad key"}, status=401)
        self.chats += 1
        return web.json_response({"choices": [{"index": 0, "message": {"content": f"from {self.url}"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 2, "completion_tokens": 2}})

    async def __aenter__(self) -> "KeyedServer":
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def served_folder(tmp_path: Path, role: str = "weak_solver") -> tuple[Path, Path, str]:
    """A folder as a serving job leaves it after init: (endpoints file, key file, key)."""
    file = tmp_path / "endpoints" / f"{role}.endpoints.json"
    key_file = endpoints.init(file, role, MODEL, job_id="4242")
    return file, key_file, key_file.read_text().strip()


def models_for(folder: Path, **role_settings) -> ModelsConfig:
    models = ModelsConfig(endpoints_file=str(folder))
    for name, value in role_settings.items():
        setattr(models.roles["weak_solver"], name, value)
    return models


# -- the file and the key ----------------------------------------------------------------------------------------


def test_init_makes_a_private_key_and_an_empty_file_register_and_deregister_flip_the_state(tmp_path):
    old = os.umask(0o000)  # a permissive umask must not leak into the key's mode
    try:
        file, key_file, key = served_folder(tmp_path)
    finally:
        os.umask(old)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600" and len(key) >= 32
    doc = json.loads(file.read_text())
    assert doc == {"format": 1, "role": "weak_solver", "model": MODEL, "job_id": "4242",
                   "key_file": "weak_solver.key", "replicas": []}

    endpoints.register(file, "weak_solver", MODEL, "http://10.0.0.1:8000/v1", node="gpu1")
    endpoints.register(file, "weak_solver", MODEL, "http://10.0.0.2:8000/v1", node="gpu2")
    endpoints.deregister(file, "http://10.0.0.1:8000/v1")
    replicas = {r["url"]: r for r in json.loads(file.read_text())["replicas"]}
    assert replicas["http://10.0.0.1:8000/v1"]["state"] == "down"
    assert (replicas["http://10.0.0.2:8000/v1"]["state"], replicas["http://10.0.0.2:8000/v1"]["node"]) == ("up", "gpu2")
    served = endpoints.load(file.parent)
    assert list(served) == ["weak_solver"]
    assert served["weak_solver"].urls == ["http://10.0.0.2:8000/v1"] and served["weak_solver"].key.value == key

    # A requeued job starts the file again: the old nodes' replicas are gone, the key stays.
    endpoints.init(file, "weak_solver", MODEL, job_id="4242")
    assert json.loads(file.read_text())["replicas"] == [] and key_file.read_text().strip() == key


def test_the_served_key_is_a_secret_that_no_repr_shows(tmp_path):
    import doctest

    from autodata import secrets
    from autodata.secrets import Secret

    file, _, key = served_folder(tmp_path)
    served = endpoints.load(file)["weak_solver"]
    assert isinstance(served.key, Secret) and served.key.value == key
    assert key not in repr(served) and key not in str(served) and "Secret('***')" in repr(served)
    result = doctest.testmod(secrets)
    assert result.failed == 0 and result.attempted > 0


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path):
    file, key_file, key = served_folder(tmp_path)
    key_file.chmod(0o644)
    with pytest.raises(EndpointsFileError) as err:
        endpoints.load(file)
    assert "0644" in str(err.value) and f"chmod 600 {key_file}" in str(err.value)
    assert key not in str(err.value)


def test_concurrent_registrations_from_several_processes_all_land(tmp_path):
    file, _, _ = served_folder(tmp_path)
    urls = [f"http://10.0.0.{i}:8000/v1" for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-m", "autodata.endpoints", "register", "--file", str(file),
                               "--role", "weak_solver", "--model", MODEL, "--url", url], cwd=ROOT) for url in urls]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert endpoints.load(file)["weak_solver"].urls == sorted(urls)


def test_registering_another_role_in_a_file_is_refused(tmp_path):
    file, _, _ = served_folder(tmp_path)
    with pytest.raises(EndpointsFileError, match="give each role its own file"):
        endpoints.register(file, "strong_solver", MODEL, "http://10.0.0.1:8000/v1")


def test_missing_and_empty_places_say_what_to_start(tmp_path):
    with pytest.raises(EndpointsFileError, match="does not exist; start the serving job"):
        endpoints.load(tmp_path / "nowhere.endpoints.json")
    with pytest.raises(EndpointsFileError, match="holds no"):
        endpoints.load(tmp_path)


# -- validation ------------------------------------------------------------------------------------------------


def compose_typed(overrides: list[str]) -> RootConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return to_typed(compose(config_name="config", overrides=overrides))


def test_validation_takes_served_roles_from_the_file_and_reports_a_bad_key_file(tmp_path):
    file, key_file, key = served_folder(tmp_path)
    # The weak solver has no URL and no model in the config: the file gives both (and no replica is up yet: the
    # stage waits for one, so that is no config problem).
    overrides = ["stage=generate", "models=openai", "models.base_url=http://api.example/v1", "models.model=big",
                 "models.roles.weak_solver.api_key_env=NOT_SET_ANYWHERE", f"models.endpoints_file={file.parent}"]
    validate(compose_typed(overrides), env={})
    key_file.chmod(0o640)
    with pytest.raises(ConfigError) as err:
        validate(compose_typed(overrides), env={})
    assert "models.endpoints_file" in str(err.value) and "chmod 600" in str(err.value)
    assert key not in str(err.value)


def test_eval_refuses_a_served_weak_solver_that_is_not_the_evaluated_model(tmp_path):
    file, _, _ = served_folder(tmp_path)
    overrides = ["stage=eval", "eval.datasets=[runs/x]", "models.roles.judge.backend=openai",
                 "models.roles.judge.base_url=http://judge/v1", "models.roles.judge.model=j"]
    with pytest.raises(ConfigError, match="judge.endpoints.json"):
        validate(compose_typed(overrides + ["eval.model=runs/train/final", f"models.endpoints_file={file.parent}"]))
    validate(compose_typed(overrides + [f"eval.model={MODEL}", f"models.endpoints_file={file.parent}"]))


def test_the_key_stays_out_of_config_yaml_and_run_info(tmp_path):
    file, _, key = served_folder(tmp_path)
    cfg = compose_typed(["stage=generate", f"models.endpoints_file={file}"])
    write_provenance(cfg, tmp_path / "run")
    for name in ("config.yaml", "run_info.json"):
        text = (tmp_path / "run" / name).read_text()
        assert key not in text
    assert str(file) in (tmp_path / "run" / "config.yaml").read_text()


# -- an LLM that follows the file ------------------------------------------------------------------------------


async def ask(llm: LLM, seed_key: str) -> str:
    return (await llm.chat("weak_solver", MESSAGES, seed_key=seed_key))[0].text


def test_llm_binds_the_role_and_follows_the_file_to_a_new_replica(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    file, _, key = served_folder(tmp_path)

    async def scenario() -> None:
        async with KeyedServer(key) as first, KeyedServer(key) as second:
            endpoints.register(file, "weak_solver", MODEL, first.url, node="n1")
            llm = LLM(models_for(file.parent), roles=("weak_solver",))
            follower = llm.endpoints_follower
            follower.interval_s = 0.0
            try:
                assert llm.endpoint("weak_solver").backend == "openai" and llm.endpoint("weak_solver").model == MODEL
                assert llm.endpoint("weak_solver").api_key_env is None
                await llm.check()
                assert await ask(llm, "a") == f"from {first.url}"
                backend = llm.backends["weak_solver"]

                # A requeued server on another node: the old URL goes down, a new one comes up.
                endpoints.register(file, "weak_solver", MODEL, second.url, node="n2")
                endpoints.deregister(file, first.url)
                assert await ask(llm, "b") == f"from {second.url}"
                assert await ask(llm, "c") == f"from {second.url}"
                assert backend.replica_urls == [second.url]

                # Both up: the replica that stays keeps its object and its in-flight count.
                stays = backend._replicas[0]
                stays.in_flight = 5
                endpoints.register(file, "weak_solver", MODEL, first.url, node="n1")
                backend.refresh()
                assert sorted(backend.replica_urls) == sorted([first.url, second.url])
                assert next(r for r in backend._replicas if r.url == second.url) is stays and stays.in_flight == 5
                stays.in_flight = 0
                assert first.refused == 0 and second.refused == 0
                assert (first.chats, second.chats) == (1, 2)

                text = caplog.text + repr(llm) + repr(vars(llm)) + repr(backend) + repr(follower.served)
                assert key not in text
            finally:
                await llm.aclose()

    asyncio.run(scenario())


def test_a_new_key_is_picked_up_with_the_file(tmp_path):
    file, key_file, key = served_folder(tmp_path)

    async def scenario() -> None:
        async with KeyedServer(key) as server:
            endpoints.register(file, "weak_solver", MODEL, server.url)
            llm = LLM(models_for(file.parent), roles=("weak_solver",))
            llm.endpoints_follower.interval_s = 0.0
            try:
                assert await ask(llm, "a") == f"from {server.url}"
                # The key file deleted and the job requeued: a new key, a new file, the same server address.
                key_file.unlink()
                endpoints.init(file, "weak_solver", MODEL)
                server.key = key_file.read_text().strip()
                endpoints.register(file, "weak_solver", MODEL, server.url)
                assert await ask(llm, "b") == f"from {server.url}"
                assert server.refused == 0 and server.key != key
            finally:
                await llm.aclose()

    asyncio.run(scenario())


def test_no_live_replica_at_start_is_an_unreachable_endpoint_naming_file_and_role(tmp_path):
    file, _, _ = served_folder(tmp_path)

    async def scenario() -> None:
        llm = LLM(models_for(file.parent, startup_wait_s=0.0), roles=("weak_solver",))
        try:
            with pytest.raises(EndpointUnreachable) as err:
                await llm.check()
            assert str(file) in str(err.value) and "role weak_solver" in str(err.value)
            assert "no live replica" in str(err.value)
        finally:
            await llm.aclose()

    asyncio.run(scenario())


def test_the_start_up_check_waits_for_a_replica_still_starting(tmp_path):
    file, _, key = served_folder(tmp_path)

    async def scenario() -> None:
        async with KeyedServer(key) as server:
            llm = LLM(models_for(file.parent, startup_wait_s=20.0), roles=("weak_solver",))
            llm.endpoints_follower.interval_s = 0.0
            try:
                loop = asyncio.get_running_loop()
                loop.call_later(0.3, endpoints.register, file, "weak_solver", MODEL, server.url)
                await asyncio.wait_for(llm.check(), timeout=15)
                assert await ask(llm, "a") == f"from {server.url}"
            finally:
                await llm.aclose()

    asyncio.run(scenario())


def test_requests_wait_for_a_replica_to_come_back_within_the_retry_budget(tmp_path):
    file, _, key = served_folder(tmp_path)

    async def scenario() -> None:
        async with KeyedServer(key) as server:
            endpoints.register(file, "weak_solver", MODEL, server.url)
            llm = LLM(models_for(file.parent, max_retries=3), roles=("weak_solver",))
            llm.endpoints_follower.interval_s = 0.0
            try:
                await llm.check()
                endpoints.deregister(file, server.url)
                # Down now; it comes back while the request is in its retry backoff.
                asyncio.get_running_loop().call_later(0.3, endpoints.register, file, "weak_solver", MODEL, server.url)
                assert await asyncio.wait_for(ask(llm, "a"), timeout=30) == f"from {server.url}"
                assert llm.retry_counts().get("connection", 0) >= 1
            finally:
                await llm.aclose()

    asyncio.run(scenario())


def test_a_replica_that_never_comes_back_fails_after_the_retries_with_the_file_named(tmp_path):
    file, _, _ = served_folder(tmp_path)

    async def scenario() -> None:
        llm = LLM(models_for(file.parent, max_retries=1), roles=("weak_solver",))
        try:
            with pytest.raises(EndpointUnreachable, match="no live replica") as err:
                await asyncio.wait_for(ask(llm, "a"), timeout=30)
            assert str(file) in str(err.value)
        finally:
            await llm.aclose()

    asyncio.run(scenario())


def test_wait_command_reports_ready_and_a_dead_process(tmp_path):
    file, key_file, key = served_folder(tmp_path)

    async def scenario() -> None:
        async with KeyedServer(key) as server:
            ready = await asyncio.to_thread(endpoints.wait_ready, server.url, key, MODEL, None, 5.0, 0.05)
            wrong_model = await asyncio.to_thread(endpoints.wait_ready, server.url, key, "other", None, 0.2, 0.05)
            wrong_key = await asyncio.to_thread(endpoints.wait_ready, server.url, "nope", MODEL, None, 0.2, 0.05)
            assert (ready, wrong_model, wrong_key) == (0, 2, 2)

    asyncio.run(scenario())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    # A port nothing listens on, and a process that has exited: 1 at once, not after the timeout.
    code = endpoints.main(["wait", "--url", "http://127.0.0.1:9/v1", "--key-file", str(key_file),
                           "--pid", str(gone.pid), "--timeout", "30", "--interval", "0.05"])
    assert code == 1
