"""The text side of CLIP: captions made from class labels through templates, a word-level vocabulary,
and a small text encoder (token embeddings + a transformer or a GRU), all trained from scratch.

A template is a sentence with a ``{word}`` slot ("a handwritten {word}"); each class has one or more
words ("seven", "7"). A class's captions are every template with every one of its words. The vocabulary
holds the words of the training captions only: a word that only held-out templates use is <unk>, as it
would be for a model that never read it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.errors import UserError

PAD, UNK = 0, 1  # token ids
SLOT = "{word}"


def words(text: str) -> list[str]:
    """Lower-case words and numbers of a text, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", text.lower())


@dataclass(frozen=True)
class Captions:
    """Every caption of every class as token ids: ``tokens`` (n, L) with PAD after the end, ``slot`` (n, L)
    True where a token came from the class word, ``classes`` (n,) and the texts themselves."""

    tokens: Tensor
    slot: Tensor
    classes: Tensor
    texts: tuple[str, ...]


class Vocabulary:
    """Word -> id: PAD 0, UNK 1, then the words of the texts it was built from, in first-seen order."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.ids: dict[str, int] = {"<pad>": PAD, "<unk>": UNK}
        for text in texts:
            for w in words(text):
                self.ids.setdefault(w, len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, texts: Sequence[str], length: int) -> Tensor:
        """(n, length) ids of texts (cut at length words, PAD after the end)."""
        out = torch.full((len(texts), length), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.ids.get(w, UNK) for w in words(text)][:length]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


def check_templates(templates: Sequence[str], key: str) -> list[str]:
    """The templates as a list; a UserError naming ``key`` when one has no ``{word}`` slot or none is given."""
    templates = list(templates or [])
    if not templates:
        raise UserError(f"{key} is empty: give at least one caption template with a {SLOT} slot.")
    for t in templates:
        if not isinstance(t, str) or t.count(SLOT) != 1:
            raise UserError(f"{key}: the template {t!r} must contain the slot {SLOT} exactly once.")
    return templates


def class_word_lists(class_words: Sequence[Sequence[str]] | None, class_names: Sequence[str], n_classes: int,
                     key: str) -> list[list[str]]:
    """The words of each class: ``class_words`` (one list per class) or else the dataset's class names."""
    if class_words is None:
        if len(class_names) != n_classes:
            raise UserError(f"{key} is null and the dataset names no classes: give one list of words per class.")
        return [[str(name).replace("_", " ")] for name in class_names]
    lists = [[str(w) for w in ws] if isinstance(ws, Sequence) and not isinstance(ws, str) else [str(ws)]
             for ws in class_words]
    if len(lists) != n_classes or any(not ws for ws in lists):
        raise UserError(f"{key} has {len(lists)} entries for {n_classes} classes: give one non-empty list of words "
                        "per class, in class order.")
    return lists


def make_captions(templates: Sequence[str], class_words: Sequence[Sequence[str]], vocab: Vocabulary,
                  length: int) -> Captions:
    """Every template with every word of every class, tokenised; ``slot`` marks the class word's tokens."""
    texts, classes, slots = [], [], []
    for c, ws in enumerate(class_words):
        for t in templates:
            for w in ws:
                texts.append(t.replace(SLOT, w))
                classes.append(c)
                before = len(words(t.split(SLOT)[0]))  # the slot's position, in words
                slots.append((before, before + len(words(w))))
    tokens = vocab.encode(texts, length)
    slot = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (a, b) in enumerate(slots):
        slot[i, a:b] = True
    return Captions(tokens, slot, torch.tensor(classes, dtype=torch.long), tuple(texts))


class TextEncoder(nn.Module):
    """tokens (B, L) -> (B, out): token + position embeddings, a small transformer encoder (or a GRU), and
    the mean over the non-PAD positions."""

    def __init__(self, vocab_size: int, length: int, out: int, width: int = 64, layers: int = 2, heads: int = 4,
                 kind: str = "transformer") -> None:
        super().__init__()
        if kind not in ("transformer", "gru"):
            raise UserError(f"model.text.kind={kind!r} is not one of transformer, gru")
        if kind == "transformer" and width % heads:
            raise UserError(f"model.text.width={width} must be a multiple of model.text.heads={heads}")
        self.kind = kind
        self.tokens = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.positions = nn.Embedding(length, width)
        if kind == "transformer":
            layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
            self.body: nn.Module = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            self.body = nn.GRU(width, width, num_layers=layers, batch_first=True, bidirectional=False)
        self.out = nn.Linear(width, out)

    def forward(self, tokens: Tensor) -> Tensor:
        pad = tokens == PAD  # (B, L)
        h = self.tokens(tokens) + self.positions.weight[: tokens.shape[1]]  # (B, L, width)
        if self.kind == "transformer":
            h = self.body(h, src_key_padding_mask=pad)
        else:
            h, _ = self.body(h)
        keep = (~pad).unsqueeze(-1).to(h.dtype)  # (B, L, 1)
        pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)  # (B, width)
        return self.out(pooled)
