"""CLIP (Radford et al. 2021), the text encoder of DALLE-2 in the lectures: an image encoder and a text
encoder trained so that an image and its caption land close together, with a softmax over the batch in
both directions. Captions are made from the labels through templates in config (genlab/nets/text.py),
several per class, so the text side has to read the class word among other words rather than look a
label up. Images are then classified zero-shot: by the class whose held-out prompts they are closest to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import CanEmbedText, CanZeroShot, Needs
from genlab.data.base import Batch
from genlab.models.contrastive import ContrastiveModel, info_nce
from genlab.nets.text import UNK, TextEncoder, Vocabulary, check_templates, class_word_lists, make_captions, words


class CLIP(ContrastiveModel):
    """Images x (B, C, H, W) and captions of their labels y (B,), embedded into one space of ``proj_dim``
    unit vectors; the loss is the symmetric InfoNCE of the image–caption similarity matrix, where
    captions of identical text count as positives of each other (a caption cannot tell apart the images
    it was written for).

    ``templates`` make the training captions, ``test_templates`` (never seen in training) the prompts
    of zero-shot classification and the captions of retrieval; ``class_words``: one list of words per
    class (null: the dataset's class names). ``word_dropout``: the probability that a training caption's
    template word is replaced by <unk>, so that the unknown words of new templates are no surprise.
    ``text``: the text encoder's kind (transformer or gru), width, layers and heads.
    """

    capabilities = ContrastiveModel.capabilities | {CanZeroShot, CanEmbedText}

    needs: ClassVar[Needs] = Needs(image=True, labels=True, batch=2)

    def __init__(
        self, *, templates: Sequence[str], test_templates: Sequence[str],
        class_words: Sequence[Sequence[str]] | None = None, word_dropout: float = 0.1,
        text: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        """``kwargs``: data_info, net, rep_dim, proj_hidden, proj_dim, similarity, temperature,
        learn_temperature, loss_chunk, optimizer, scheduler, compile (see ContrastiveModel)."""
        super().__init__(**kwargs)
        info = self.data_info
        per_class = class_word_lists(class_words, info.class_names, info.num_classes or 0, "model.class_words")
        train_t = check_templates(templates, "model.templates")
        test_t = check_templates(test_templates, "model.test_templates")
        self.class_words = per_class
        self.vocab = Vocabulary([t.replace("{word}", w) for t in train_t for ws in per_class for w in ws])
        self.length = max(len(words(t.replace("{word}", w))) for t in train_t + test_t for ws in per_class for w in ws)
        self.train_captions = make_captions(train_t, per_class, self.vocab, self.length)
        self.test_captions = make_captions(test_t, per_class, self.vocab, self.length)
        self.word_dropout = word_dropout
        options = dict(text or {})
        self.text_encoder = TextEncoder(len(self.vocab), self.length, self.head[-1].out_features, **options)
        # the captions are made from the config: buffers that move with the model and are not saved
        for name, caps in (("train", self.train_captions), ("test", self.test_captions)):
            counts = torch.bincount(caps.classes, minlength=info.num_classes or 0)  # captions per class
            self.register_buffer(f"{name}_tokens", caps.tokens, persistent=False)
            self.register_buffer(f"{name}_slot", caps.slot, persistent=False)
            self.register_buffer(f"{name}_first", torch.cumsum(counts, 0) - counts, persistent=False)
            self.register_buffer(f"{name}_count", counts, persistent=False)

    # ---- captions ------------------------------------------------------------------------
    def pick_captions(self, y: Tensor, which: str = "train") -> Tensor:
        """Caption indices (B,): for each label one of its class's captions, at random."""
        first, count = getattr(self, f"{which}_first")[y], getattr(self, f"{which}_count")[y]
        return first + (torch.rand(y.shape, device=y.device) * count).long().clamp(max=count - 1)

    def caption_tokens(self, idx: Tensor, which: str = "train", dropout: float = 0.0) -> Tensor:
        """Token ids (B, L) of captions idx; with ``dropout`` the template's words are replaced by <unk>
        at that rate (the class word never is)."""
        tokens = getattr(self, f"{which}_tokens")[idx]
        if dropout > 0:
            drop = (torch.rand(tokens.shape, device=tokens.device) < dropout) & ~getattr(self, f"{which}_slot")[idx]
            tokens = tokens.masked_fill(drop & (tokens != 0), UNK)
        return tokens

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """Token ids (B, L) -> (B, proj_dim) unit vectors in the shared space."""
        return F.normalize(self.text_encoder(tokens), dim=1)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Free texts ("a handwritten seven") -> (n, proj_dim) unit vectors; unknown words are <unk>."""
        return self.embed_tokens(self.vocab.encode(list(texts), self.length).to(self.device))

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words(text) if w not in self.vocab.ids]

    # ---- capabilities ----------------------------------------------------------------------
    def training_captions(self) -> tuple[Tensor, Tensor]:
        return self.embed_tokens(self.train_tokens), self.train_captions.classes.to(self.device)

    def caption_embeddings(self, y: Tensor) -> Tensor:
        return self.embed_tokens(self.caption_tokens(self.pick_captions(y, "test"), "test"))

    def held_out_captions(self) -> tuple[Tensor, Tensor]:
        return self.embed_tokens(self.test_tokens), self.test_captions.classes.to(self.device)

    def positive_pairs(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if y is None:
            raise ValueError("CLIP's positive pairs are an image and a caption of its label: give y")
        return self.embed(x), self.caption_embeddings(y)

    # ---- training -----------------------------------------------------------------------------
    def loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        x, y = batch["x"], batch["y"]
        idx = self.pick_captions(y)  # (B,) a training caption per image
        tokens = self.caption_tokens(idx, dropout=self.word_dropout if stage == "train" else 0.0)
        img = self.project(self.head(self.encode(x)))  # (B, D)
        txt = self.project(self.text_encoder(tokens))  # (B, D)
        tau = self.temperature()
        i2t = info_nce(img, txt, idx, idx, tau, chunk=self.loss_chunk)  # each image against every caption
        t2i = info_nce(txt, img, idx, idx, tau, chunk=self.loss_chunk)  # each caption against every image
        with torch.no_grad():  # how often an image's closest caption in the batch has its caption's text
            caption_acc = (idx[(img @ txt.T).argmax(1)] == idx).float().mean()
        return {"image_to_text": i2t / 2, "text_to_image": t2i / 2, "caption_acc": caption_acc,
                "temperature": tau.detach(), "loss": (i2t + t2i) / 2}
