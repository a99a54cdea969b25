"""autodata/errors.py: the shared error types and ``lookup``, the one way a registry refuses an unknown name."""

from __future__ import annotations

import doctest

import pytest

from autodata import errors, validation
from autodata.config import CorpusConfig
from autodata.corpus import CorpusError, load_corpus
from autodata.errors import UnknownName, lookup
from autodata.stages import UnknownStage, resolve_stage
from autodata.tracking import LOGGERS, start_wandb


def test_module_doctests():
    from autodata.generate import checks

    for module in (errors, validation, checks):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_lookup_raises_the_callers_error_and_names_the_known_ones():
    with pytest.raises(CorpusError, match=r"unknown corpus source corpus.source='pdf'; known: folder, hf, jsonl"):
        load_corpus(CorpusConfig(source="pdf"))
    with pytest.raises(UnknownName, match="unknown stage 'genrate'; known: .*generate.*; run autodata stage="):
        resolve_stage("genrate")
    assert issubclass(UnknownStage, UnknownName) and issubclass(UnknownName, ValueError)


def test_an_unhashable_name_is_refused_like_an_unknown_one():
    with pytest.raises(UnknownName, match=r"unknown logger \['wandb'\]; known: none, wandb"):
        lookup(LOGGERS, ["wandb"], "logger")


def test_the_logger_registry_starts_no_run_for_none(tmp_path):
    from autodata.config import RootConfig

    assert start_wandb(RootConfig(), tmp_path, "generate") is None and list(tmp_path.iterdir()) == []
    cfg = RootConfig()
    cfg.logger = "tensorboard"
    with pytest.raises(UnknownName, match="unknown logger logger='tensorboard'; known: none, wandb"):
        start_wandb(cfg, tmp_path, "generate")


def test_the_old_import_path_of_the_error_types_still_works():
    assert validation.ConfigError is errors.ConfigError and validation.InputError is errors.InputError
    assert validation.Problem is errors.Problem
