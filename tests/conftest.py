"""Shared fixtures: a real `redis-server` and a real local Ray cluster, one of each per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Before Ray is imported anywhere: no auth token, and no cluster mode Ray reserves for Windows/macOS.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """redis:// URL of a fresh, non-persisting redis-server on a free 127.0.0.1 port."""
    from services.store.redis_server import RedisServer

    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A new local Ray cluster on 127.0.0.1 (never an existing one), no dashboard.

    16 logical CPUs and 1 logical GPU, whatever the machine has: Ray's counts only place actors (a
    pipeline test runs a learner, rollout workers and a verifier at once; a placement test places a
    one-GPU layout); they do not limit what the processes use. An actor that asks for no GPU sees none.
    """
    import ray

    ray.init(
        address="local",
        num_cpus=16,
        num_gpus=1,
        include_dashboard=False,
        namespace="paced-tests",
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """Randomly initialised tiny Llama teacher and student with the character tokenizer, saved in HF
    format: real models for plumbing tests (what they generate is noise; the shipped, trained models
    are `embedded:teacher` / `embedded:student`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from paced_core.chartok import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    root = tmp_path_factory.mktemp("tiny-models")
    paths = {}
    for seed, (name, hidden, layers) in enumerate([("teacher", 64, 2), ("student", 32, 1)]):
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64, tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths
