"""Source documents with stable ids, from a folder, JSONL, Parquet, a HF dataset, or the embedded corpus.

The embedded default (``corpus.source=pydoc``) is the Python Language
Reference topics that ship inside the standard library (``pydoc_data.topics``):
real CS text that needs no network.

    python -m autodata.run stage=generate corpus=folder corpus.path=/data/papers
    python -m autodata.run stage=generate corpus.num_shards=4 corpus.shard=0 hydra.run.dir=runs/big/shard_0

A corpus too large for one process is split into ``corpus.num_shards`` parts by a hash of each document's
id (``shard_of``), so every process and machine agrees on the split without talking to the others;
``stage=merge`` joins the shards' run dirs into one (autodata/generate/merge.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

# errors, not validation: validation reads LOADERS, the one list of corpus sources
from autodata.config import CorpusConfig
from autodata.errors import InputError, lookup

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".tex")


@dataclass
class Document:
    id: str
    text: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def reference(self) -> dict[str, Any]:
        """How the run's files point at this document instead of repeating its text (the documents ledger's row):
        the hash and length of the text the corpus gives.

        >>> Document("d", "abc", "test").reference()["document_chars"]
        3
        """
        return {"document_sha256": text_sha256(self.text), "document_chars": len(self.text)}


def text_sha256(text: str) -> str:
    """The hex SHA-256 of a text (UTF-8), the hash the run's files record for a document or a prompt."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CorpusError(InputError):
    """The corpus cannot be read as configured; the message says what to change."""


def content_id(text: str) -> str:
    return "sha1-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def resolve_path(path: str) -> Path:
    """Absolute paths as given; relative ones against the working dir, then the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def _from_pydoc(cfg: CorpusConfig) -> Iterable[Document]:
    from pydoc_data import topics

    for name, text in sorted(topics.topics.items()):
        yield Document(id=f"pydoc/{name}", text=text.strip(), source="pydoc", meta={"topic": name})


def _from_folder(cfg: CorpusConfig) -> Iterable[Document]:
    root = _existing(cfg.path, "a folder of .txt/.md files")
    if not root.is_dir():
        raise CorpusError(f"corpus.path={cfg.path!r} is a file, but corpus.source=folder expects a folder; "
                          f"use corpus.source=jsonl or parquet for a single file")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    # why a file was skipped -> the files, so a folder with no usable file can say what it held instead
    skipped: dict[str, list[Path]] = {}
    for path in files:
        why = None
        if path.suffix.lower() not in TEXT_SUFFIXES:
            why = "no text suffix"
        else:
            raw = path.read_bytes()
            if b"\x00" in raw[:4096]:
                why = "binary content"
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    why = "not UTF-8"
        if why is not None:
            log.warning("skipping %s: %s (expected UTF-8 text in a %s file)", path, why, "/".join(TEXT_SUFFIXES))
            skipped.setdefault(why, []).append(path)
            continue
        yield Document(id=str(path.relative_to(root).with_suffix("")), text=text.strip(), source=str(root))
    where = f"corpus.path={cfg.path!r}" + (f" ({root})" if str(root) != cfg.path else "")
    fix = (f"put the documents there as UTF-8 text files ({', '.join(TEXT_SUFFIXES)}; convert PDFs first, e.g. "
           f"with pdftotext), or point corpus.path at the folder that holds them")
    if not files:
        raise CorpusError(f"the corpus is empty: {where} is an empty folder; {fix}")
    if sum(len(paths) for paths in skipped.values()) == len(files):
        found = "; ".join(f"{why}: {_some(paths)}" for why, paths in skipped.items())
        raise CorpusError(f"the corpus is empty: {where} holds {len(files)} file(s) but "
                          f"none is readable text ({found}); {fix}")


def _some(paths: list[Path], shown: int = 3) -> str:
    """
    >>> _some([Path("a.pdf"), Path("b.pdf"), Path("c.png"), Path("d.png")])
    'a.pdf, b.pdf, c.png and 1 more'
    """
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(p.name for p in paths[:shown]) + more


def _records_to_docs(records: Iterable[dict], cfg: CorpusConfig, origin: str) -> Iterable[Document]:
    for i, rec in enumerate(records):
        if cfg.text_field not in rec:
            texts = [k for k, v in rec.items() if isinstance(v, str)]
            example = f" (e.g. corpus.text_field={texts[0]})" if texts else ""
            raise CorpusError(
                f"record {i} of {origin} has no field {cfg.text_field!r} (found: {sorted(rec)[:10]}); "
                f"set corpus.text_field to the field holding the document text{example}"
            )
        text = rec[cfg.text_field]
        if not isinstance(text, str):
            raise CorpusError(f"record {i} of {origin}: {cfg.text_field!r} is {type(text).__name__}, expected text")
        doc_id = rec.get(cfg.id_field) if cfg.id_field else None
        meta = {k: v for k, v in rec.items() if k not in (cfg.text_field, cfg.id_field) and _is_plain(v)}
        yield Document(id=str(doc_id) if doc_id is not None else content_id(text), text=text.strip(),
                       source=origin, meta=meta)


def _is_plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _from_jsonl(cfg: CorpusConfig) -> Iterable[Document]:
    path = _existing(cfg.path, "a .jsonl file")

    def records() -> Iterable[dict]:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorpusError(f"{path}:{lineno} is not valid JSON ({err.msg}); fix or remove that line") from None

    return _records_to_docs(records(), cfg, str(path))


def _from_parquet(cfg: CorpusConfig) -> Iterable[Document]:
    import pyarrow.parquet as pq

    path = _existing(cfg.path, "a .parquet file")
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a bad file
        raise CorpusError(f"{path} could not be read as Parquet ({err}); is it a Parquet file?") from None
    return _records_to_docs(table.to_pylist(), cfg, str(path))


def _from_hf(cfg: CorpusConfig) -> Iterable[Document]:
    import datasets

    if not cfg.path:
        raise CorpusError("corpus.source=hf needs corpus.path: a dataset name or a local save_to_disk folder")
    local = resolve_path(cfg.path)
    if local.exists():
        loaded = datasets.load_from_disk(str(local))
        ds = loaded[cfg.split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        ds = datasets.load_dataset(cfg.path, split=cfg.split)
    return _records_to_docs(ds, cfg, cfg.path)


def _existing(path: str | None, what: str) -> Path:
    if not path:
        raise CorpusError(f"corpus.path is not set; expected {what}")
    resolved = resolve_path(path)
    if not resolved.exists():
        raise CorpusError(f"corpus.path={path!r} does not exist (looked at {resolved}); expected {what}: fix "
                          f"the path (relative paths are read from the working dir, then the project root)")
    return resolved


LOADERS: dict[str, Callable[[CorpusConfig], Iterable[Document]]] = {
    "pydoc": _from_pydoc,
    "folder": _from_folder,
    "jsonl": _from_jsonl,
    "parquet": _from_parquet,
    "hf": _from_hf,
}


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard a document belongs to: a hash of its id, the same on every run, process and machine (Python's
    ``hash()`` of a string changes with each process).

    >>> [shard_of(i, 3) for i in ("doc0", "doc1", "doc2", "pydoc/assert")]
    [0, 2, 2, 2]
    >>> shard_of("anything", 1)
    0
    """
    return int(hashlib.sha1(doc_id.encode("utf-8")).hexdigest(), 16) % num_shards


def load_corpus(cfg: CorpusConfig) -> tuple[list[Document], dict[str, int]]:
    """Documents sorted by id and capped at ``cfg.limit``, then those of shard ``cfg.shard`` of
    ``cfg.num_shards``, plus counts of what was skipped.

    The cap comes first, so ``corpus.limit`` means the same documents with and without sharding and the shards
    together are exactly the unsharded corpus. A shard that holds no document is not an error (a small corpus
    over many shards): its run writes empty outputs, and stage=merge still counts it."""
    loader = lookup(LOADERS, cfg.source, "corpus source", key="corpus.source", error=CorpusError)
    docs: dict[str, Document] = {}
    skipped = {"too_short": 0, "duplicate_id": 0}
    for doc in loader(cfg):
        if len(doc.text) < cfg.min_chars:
            skipped["too_short"] += 1
            continue
        if doc.id in docs:
            skipped["duplicate_id"] += 1
            continue
        docs[doc.id] = doc
    ordered = [docs[k] for k in sorted(docs)]
    if cfg.limit is not None:
        ordered = ordered[: cfg.limit]
    if not ordered:
        raise CorpusError(
            f"the corpus is empty: source={cfg.source!r} path={cfg.path!r} gave no document of at least "
            f"{cfg.min_chars} characters (skipped: {skipped}); point corpus.path at text files or lower corpus.min_chars"
        )
    if cfg.num_shards > 1:
        total = len(ordered)
        ordered = [d for d in ordered if shard_of(d.id, cfg.num_shards) == cfg.shard]
        log.info("corpus shard %d of %d: %d of %d documents", cfg.shard, cfg.num_shards, len(ordered), total)
        if not ordered:
            log.warning("corpus shard %d of %d holds none of the %d documents: this run writes empty outputs "
                        "(fewer shards would keep every process busy)", cfg.shard, cfg.num_shards, total)
    return ordered, skipped
