"""The document cap: derived from the context length of every role that reads the document, overridden by
max_document_tokens, and recorded (stats.json, a warning in rounds.jsonl) when it cuts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from autodata.config import RootConfig
from autodata.domains import build_domain
from autodata.generate.documents import CHARS_PER_TOKEN, DOCUMENT_ROOM_SHARE, prompt_overheads
from autodata.generate.stage import GenerateAborted, generate
from tests.scripted import scripted_llm
from tests.test_generate_loop import Scenario, make_cfg, rows

ACCEPT = Scenario([{"weak": "BAD", "strong": "GOOD"}])
# 7,500 tokens by the 4-characters estimate: more than the 6,000-token cap every run used to have
LONG_DOC = "Long document about evaluation order. " * 790


def long_doc_cfg(tmp_path: Path, **generate_overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = make_cfg(tmp_path, n_docs=0, max_rounds=1, **generate_overrides)
    (tmp_path / "docs" / "long.md").write_text(LONG_DOC)
    return cfg


def run(cfg, tmp_path: Path, contexts: dict[str, int]):
    llm, backends = scripted_llm(cfg.models, ACCEPT)
    for role, context in contexts.items():
        backends[role].context = context
    stats = asyncio.run(generate(cfg, tmp_path / "run", llm=llm))
    return stats, backends


def challenger_document(backends) -> str:
    prompt = backends["challenger"].requests[0].messages[-1]["content"]
    return prompt.split("<document>\n", 1)[1].split("\n</document>", 1)[0]


def test_without_a_known_context_the_document_is_sent_whole(tmp_path):
    stats, backends = run(long_doc_cfg(tmp_path), tmp_path, {})
    assert challenger_document(backends) == LONG_DOC.strip()
    assert stats["documents_truncated"] == 0 and stats["document_cap"]["tokens"] is None
    assert "documents are sent whole" in stats["document_cap"]["source"]


def test_the_cap_is_the_context_less_the_prompt_and_max_tokens(tmp_path):
    cfg = long_doc_cfg(tmp_path)
    stats, backends = run(cfg, tmp_path, {"challenger": 10_000, "quality_verifier": 200_000})
    cap = stats["document_cap"]["tokens"]
    overhead = prompt_overheads(cfg, build_domain(cfg.domain), 1, 4096)["challenger"]
    # The challenger's context binds (the QV's is far larger): its room after prompt and max_tokens, 3/4 of it
    assert cap == int((10_000 - overhead - 4096) * DOCUMENT_ROOM_SHARE)
    assert stats["document_cap"]["source"].startswith("challenger: (10000 context tokens")
    assert len(challenger_document(backends)) == cap * CHARS_PER_TOKEN
    (rnd,) = rows(tmp_path, "rounds.jsonl")
    assert rnd["warnings"] == [f"document truncated from {len(LONG_DOC.strip())} to {cap * CHARS_PER_TOKEN} characters "
                               f"(~{cap} tokens)"]
    assert stats["documents_truncated"] == 1


def test_a_strong_solver_with_the_document_bounds_the_cap_too(tmp_path):
    cfg = long_doc_cfg(tmp_path, strong_sees_document=True)
    stats, _ = run(cfg, tmp_path, {"challenger": 200_000, "strong_solver": 12_000})
    assert stats["document_cap"]["source"].startswith("strong_solver:")
    # Without privileged access the strong solver's context does not matter
    cfg = long_doc_cfg(tmp_path / "b")
    stats, _ = run(cfg, tmp_path / "b", {"challenger": 200_000, "strong_solver": 12_000})
    assert stats["document_cap"]["source"].startswith("challenger:")


def test_max_document_tokens_overrides_the_derived_cap(tmp_path):
    cfg = long_doc_cfg(tmp_path)
    cfg.models.default.max_document_tokens = 320
    stats, backends = run(cfg, tmp_path, {"challenger": 200_000})
    assert stats["document_cap"]["tokens"] == 320 and len(challenger_document(backends)) == 320 * CHARS_PER_TOKEN


def test_a_context_with_no_room_for_a_document_stops_before_any_call(tmp_path):
    with pytest.raises(GenerateAborted, match=r"challenger: a context of 3000 tokens .* leaves no room"):
        run(long_doc_cfg(tmp_path), tmp_path, {"challenger": 3000})


@pytest.mark.parametrize("domain", ["cs", "legal", "principia"])
def test_every_domain_renders_its_prompts_without_a_document(domain):
    from tests.test_domains import PRESETS

    root = RootConfig(stage="generate")
    root.domain = PRESETS[domain]
    root.generate.strong_sees_document = True
    overheads = prompt_overheads(root, build_domain(root.domain), 3, 4096)
    assert set(overheads) == {"challenger", "quality_verifier", "strong_solver"}
    # Feedback on every earlier attempt weighs in: more rounds, a longer challenger prompt
    root.generate.max_rounds = 20
    assert prompt_overheads(root, build_domain(root.domain), 3, 4096)["challenger"] > overheads["challenger"]
