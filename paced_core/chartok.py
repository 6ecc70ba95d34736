"""The character-level tokenizer of the tiny synthetic-arithmetic models.

One token per character of `tasks.SYNTHETIC_ALPHABET` after the special tokens `<pad> <s> </s> <unk>`;
decoding joins characters without spaces, so `decode(encode(s)) == s` for every alphabet string. No
BOS is added: a prompt is exactly its characters.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from paced_core.tasks import SYNTHETIC_ALPHABET

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def build_char_tokenizer(alphabet: str = SYNTHETIC_ALPHABET) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *alphabet))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    pad, bos, eos, unk = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        unk_token=unk,
        padding_side="left",
        model_max_length=64,
    )
