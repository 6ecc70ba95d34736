"""The preflight reads the installed vLLM's build as vLLM itself does, without importing it."""

from __future__ import annotations

from services.placement import vllm_version


def test_the_build_the_preflight_reads_is_the_platform_vllm_picks():
    from vllm.platforms import current_platform

    version = vllm_version()
    assert version is not None
    assert ("cpu" in version) == current_platform.is_cpu(), (version, current_platform)
