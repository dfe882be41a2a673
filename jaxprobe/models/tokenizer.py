"""A small CLIP-format BPE tokenizer built with the `tokenizers` library from a word list.

Every vocabulary word becomes one token (BPE trained on the words until each is merged whole), and the files are
the standard CLIP `vocab.json` + `merges.txt`, so `transformers.CLIPTokenizer` (and diffusers) read the directory.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable

from jaxprobe import io

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_word_tokenizer(words: Iterable[str], directory, *, max_length: int) -> int:
    """Train and save the tokenizer as `directory` (atomically: it holds these files only); returns the vocabulary
    size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = sorted({w.lower() for w in words})
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = sorted({c for w in words for c in w})
    # Enough merges for every word to become a single token: at most len(word) - 1 merges per word.
    budget = len(alphabet) * 2 + sum(len(w) for w in words) + 2
    trainer = trainers.BpeTrainer(vocab_size=budget, special_tokens=[BOS, EOS], initial_alphabet=alphabet,
                                  end_of_word_suffix="</w>", show_progress=False, min_frequency=1)
    tok.train_from_iterator([" ".join(words)] * 2, trainer=trainer)
    with tempfile.TemporaryDirectory() as tmp:  # the tokenizers library's own files, read back
        vocab_file, merges_file = tok.model.save(tmp)
        vocab = json.loads(Path(vocab_file).read_text())
        merges = Path(merges_file).read_text()
    with io.atomic_dir(directory) as out:
        io.write_text(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
        io.write_text(out / "merges.txt", merges if merges.startswith("#version") else "#version: 0.2\n" + merges)
        io.write_text(out / "tokenizer_config.json", json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": BOS, "eos_token": EOS,
            "unk_token": EOS, "pad_token": EOS}, indent=2))
    return len(vocab)
