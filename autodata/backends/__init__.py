"""Backend registry: a backend name maps to the class that serves it.

Classes are imported only when chosen, so a CPU machine never imports vLLM
and ``stage=generate`` against an API never imports torch.
"""

from __future__ import annotations

import importlib

from autodata.backends.base import Backend, BackendError, ChatRequest, Completion, EndpointUnreachable, Sampling
from autodata.config import EndpointConfig
from autodata.errors import lookup

BACKENDS: dict[str, str] = {
    "local": "autodata.backends.local:LocalBackend",
    "openai": "autodata.backends.openai_backend:OpenAIBackend",
    "vllm": "autodata.backends.vllm_backend:VLLMBackend",
}


def build_backend(endpoint: EndpointConfig) -> Backend:
    """Instantiate the backend an endpoint names."""
    target = lookup(BACKENDS, endpoint.backend, "backend")
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(endpoint)


def endpoint_key(endpoint: EndpointConfig) -> tuple:
    """Endpoints with the same key share one backend instance (one loaded model, one pool)."""
    return (
        endpoint.backend,
        endpoint.model,
        tuple(endpoint.base_urls or ()),
        endpoint.device,
        endpoint.dtype,
    )


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "ChatRequest",
    "Completion",
    "EndpointUnreachable",
    "Sampling",
    "build_backend",
    "endpoint_key",
]
