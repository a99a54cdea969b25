"""Redaction of what a published card must not carry: URLs, hostnames, filesystem paths and secrets.

A dataset card goes to the hub with ``generate.push_to_hub``; it shows the commands that made the run and
the settings that shaped the data. Those name endpoints (``models.*.base_url``, a host inside
``extra_body``), folders on the cluster (``corpus.path``, ``hydra.run.dir``, a home directory) and, at worst,
a secret. Two rules, both applied:

- by key: a value whose key names a URL, host, path or secret (``base_url``, ``corpus.path``,
  ``hydra.run.dir``, ``train.dataset``, ``api_key_env``) is replaced whole, whatever it looks like;
- by value: inside every other string, URLs, e-mail addresses, IP addresses, dotted hostnames, ``host:port``,
  absolute, home, environment-variable, Windows and dotted relative paths, file names and paths of three or
  more parts are replaced where they occur; a whole value that names something existing on this machine
  (``runs/cs``) is a path too.

A hub id (``Qwen/Qwen3.5-4B``, ``my-org/data``) has one slash and is kept: the card names the models.
Placeholders are ``<url>``, ``<host>``, ``<path>`` and ``<redacted>``; the card's commands quote them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

URL, HOST, PATH, SECRET = "<url>", "<host>", "<path>", "<redacted>"

# The last part of a dotted key (lowercased, Hydra's +/++/~ prefix dropped) -> what its value is
_KEY_RULES = (
    (re.compile(r"(^|_)(api_key|key|token|secret|password|passwd|credentials?|account)(_env)?$"), SECRET),
    (re.compile(r"(^|_)(url|urls|uri|endpoint|endpoints)$"), URL),
    (re.compile(r"(^|_)(host|hosts|hostname|node|nodes|nodelist|addr|address)$"), HOST),
    (re.compile(r"(^|_)(path|paths|dir|dirs|file|files|folder|folders|root|runs|dataset|datasets|checkpoint|"
                r"variant|inputs|script|pilot|output|outputs)$"), PATH),
)
# Hydra flags whose argument is a folder or file
PATH_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--experimental-rerun")
# The key of a Hydra override: +key, ++key, ~key, a group (hydra/launcher) or a package (group@pkg)
_OVERRIDE_KEY = re.compile(r"[+~]{0,2}[A-Za-z_][\w.@/-]*")

# What may follow the start of a URL or path: anything up to a space, a separator, a quote or a bracket
_TAIL = r"[^\s,;'\"<>{}\[\]()]"
_END = _TAIL + "*"
FILE_EXTENSIONS = ("jsonl", "json", "yaml", "yml", "txt", "md", "parquet", "csv", "tsv", "arrow", "sqlite", "db",
                   "pt", "bin", "safetensors", "gguf", "sh", "py", "log", "pickle", "pkl", "tar", "gz", "zip")
# In order: each pattern runs on what the ones before it left
_VALUE_RULES = (
    (re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s/\[]*@)?(?:\[[0-9A-Fa-f:.]*\])?" + _END), URL),
    (re.compile(r"[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::\d+)?"), HOST),
    (re.compile(r"(?<![\w])[A-Za-z]:[\\/]" + _END), PATH),
    (re.compile(r"\\\\[\w.$-]+" + _END), PATH),
    (re.compile(r"(?<![\w/$~%])(?:~[\w.-]*|\$\{[^}]*\}|\$[A-Za-z_]\w*|%\w+%)(?:[\\/]" + _END + r")?"), PATH),
    (re.compile(r"(?<![\w/.])\.{1,2}[\\/]" + _END), PATH),
    (re.compile(r"(?<![\w.~$%<])/" + _TAIL + "+"), PATH),
    (re.compile(r"[\w.-]+\\[\w.\\-]+"), PATH),
    (re.compile(r"(?<![\w./-])[\w.-]+(?:/[\w.-]+){2,}/?"), PATH),
    (re.compile(r"(?<![\w.-])[\w-]+(?:\.[\w-]+)*\.(?:" + "|".join(FILE_EXTENSIONS) + r")\b"), PATH),
    (re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::\d+)?"), HOST),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), HOST),
    (re.compile(r"\b(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b(?::\d+)?"), HOST),
    (re.compile(r"(?:^|(?<=[\s=:@/'\"(]))[A-Za-z][A-Za-z0-9-]*:\d{2,5}\b"), HOST),
)


def key_placeholder(key: str) -> str | None:
    """What every value of ``key`` becomes, or None when the key says nothing about its value.

    >>> key_placeholder("models.roles.weak.base_url"), key_placeholder("+hydra.run.dir"), key_placeholder("seed")
    ('<url>', '<path>', None)
    >>> key_placeholder("models.api_key_env"), key_placeholder("train.dataset"), key_placeholder("domain.name")
    ('<redacted>', '<path>', None)
    """
    last = key.lstrip("+~").rsplit(".", 1)[-1].rsplit("/", 1)[-1].lower()
    for pattern, placeholder in _KEY_RULES:
        if pattern.search(last):
            return placeholder
    return None


# key:value or key=value inside a string (a Hydra dict, JSON): the key rules apply to the value
_PAIR = re.compile(r"""(?P<key>[A-Za-z_][\w.-]*)(?P<sep>["']?\s*[:=]\s*)(?P<value>'[^']*'|"[^"]*"|[^\s,;{}\[\]()]+)""")


def _redact_pair(match: re.Match) -> str:
    placeholder = key_placeholder(match["key"])
    if placeholder is None or match["value"].startswith("//"):
        return match[0]
    return f"{match['key']}{match['sep']}{placeholder}"


def redact_text(text: str) -> str:
    """``text`` with every URL, host, path and file name in it replaced, and the value of each ``key:value`` pair
    whose key names one.

    >>> redact_text("{api_base:http://10.0.0.5:8000/v1,seed:3,cache_dir:scratch}")
    '{api_base:<url>,seed:3,cache_dir:<path>}'
    >>> redact_text("Qwen/Qwen3.5-4B"), redact_text("node7:8000"), redact_text("~/data/papers")
    ('Qwen/Qwen3.5-4B', '<host>', '<path>')
    """
    text = _PAIR.sub(_redact_pair, text)
    for pattern, placeholder in _VALUE_RULES:
        text = pattern.sub(placeholder, text)
    return text


def _names_a_local_path(text: str) -> bool:
    """A relative path written like one (``runs/cs``, ``data.jsonl``) that exists here; a bare word never is."""
    if not any(c in text for c in "/\\."):
        return False
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):
        return False


def redact_value(key: str, value: Any) -> Any:
    """``value`` of the setting ``key`` with what must not be published replaced (lists and dicts item by item;
    None, numbers and booleans as they are).

    >>> redact_value("corpus.path", "papers"), redact_value("models.roles.weak.model", "/scratch/ckpt")
    ('<path>', '<path>')
    >>> redact_value("eval.datasets", ["runs/a", "runs/b"]), redact_value("generate.seed", 3)
    (['<path>', '<path>'], 3)
    """
    if isinstance(value, dict):
        return {k: redact_value(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(key, v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    placeholder = key_placeholder(key)
    if placeholder is not None:
        return placeholder if text else text
    if _names_a_local_path(text.strip()):
        return PATH
    return redact_text(text)


def redact_argv(argv: list[str]) -> list[str]:
    """Command-line arguments (Hydra overrides and flags) with values redacted by their key and their content.

    >>> redact_argv(["stage=generate", "corpus.path=/home/alice/papers", "models.base_url=http://node7:8000/v1"])
    ['stage=generate', 'corpus.path=<path>', 'models.base_url=<url>']
    >>> redact_argv(["--config-dir", "my_conf", "hydra.run.dir=runs/x", "generate.push_to_hub=org/data", "~eval"])
    ['--config-dir', '<path>', 'hydra.run.dir=<path>', 'generate.push_to_hub=org/data', '~eval']
    """
    out: list[str] = []
    after_path_flag = False
    for arg in argv:
        key, sep, value = arg.partition("=")
        if after_path_flag:
            out.append(PATH)
        elif arg.startswith("-"):
            # A flag, or --flag=value
            out.append(f"{key}={PATH if key in PATH_FLAGS else redact_value('', value)}" if sep else arg)
        elif sep and _OVERRIDE_KEY.fullmatch(key):
            out.append(f"{key}={redact_value(key, value)}")
        elif arg.startswith("~") and _OVERRIDE_KEY.fullmatch(arg):
            # Hydra's delete of a key, with no value
            out.append(arg)
        else:
            out.append(redact_value("", arg))
        after_path_flag = not sep and arg in PATH_FLAGS
    return out
