"""CLIP (Radford et al. 2021), the text encoder of DALLE-2 in the lectures: an image encoder and a text
encoder trained so that an image and its caption land close together, with a softmax over the batch in
both directions. Captions are made from the labels through templates in config (genlab/nets/text.py),
several per class, so the text side has to read the class word among other words rather than look a
label up. Images are then classified zero-shot: by the class whose held-out prompts they are closest to.

On captioned data (``data=captioned_shapes``: samples with attributes), the captions are the data's own: drawn
per image and step from its templates (genlab/data/captioned.py), each naming the shape and some of colour,
size and position, so a caption matches every image with the values it names — all of them are its
positives. Zero-shot classification is then per attribute (``attribute_prompts``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.capabilities import CanEmbedText, CanPromptAttributes, CanZeroShot, Needs
from genlab.data.base import Batch
from genlab.data.captioned import ATTRIBUTES, SYNONYMS, TEMPLATES, TEST_TEMPLATES, Captioner, matches
from genlab.errors import UserError
from genlab.models.contrastive import ContrastiveModel, info_nce
from genlab.nets.text import PAD, UNK, TextEncoder, Vocabulary, check_templates, class_word_lists, make_captions, words


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

    capabilities = ContrastiveModel.capabilities | {CanZeroShot, CanEmbedText, CanPromptAttributes}

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
        self.captioner: Captioner | None = None
        if info.attributes:  # the data's captions; its class captions (each shape alone) from the same templates
            if tuple(info.attributes) != tuple(ATTRIBUTES.items()):
                raise UserError(f"CLIP captions data with attributes through genlab.data.captioned, whose attributes "
                                f"are not those of '{info.name}'.")
            self.captioner = Captioner(TEMPLATES, info.caption_omit)
            templates = [shape_slot(t) for t in TEMPLATES]
            test_templates = [shape_slot(t) for t in TEST_TEMPLATES]
            class_words = [list(SYNONYMS[shape]) for shape in ATTRIBUTES["shape"]]
        per_class = class_word_lists(class_words, info.class_names, info.num_classes or 0, "model.class_words")
        train_t = check_templates(templates, "model.templates")
        test_t = check_templates(test_templates, "model.test_templates")
        self.class_words = per_class
        extra = Captioner.vocabulary_texts(TEMPLATES) if self.captioner else []
        self.vocab = Vocabulary([t.replace("{word}", w) for t in train_t for ws in per_class for w in ws] + extra)
        self.length = max(len(words(t.replace("{word}", w))) for t in train_t + test_t for ws in per_class for w in ws)
        if self.captioner:
            self.length = max(self.length, Captioner.longest(TEMPLATES + TEST_TEMPLATES))
            value_words = {w for ws in SYNONYMS.values() for v in ws for w in words(v)} | {"shape"}
            self.register_buffer("value_ids", torch.tensor(sorted(self.vocab.ids[w] for w in value_words)),
                                 persistent=False)  # the words word_dropout never drops
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
        if self.captioner is not None:
            return self.attribute_loss_terms(batch, stage)
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

    # ---- captions of attributes (captioned data) --------------------------------------------------------
    def attribute_values(self, factors: Tensor) -> Tensor:
        """(B, A) value indices of the attributes, from a batch's factors (B, F)."""
        return factors[:, : len(ATTRIBUTES)].long()

    def attribute_loss_terms(self, batch: Batch, stage: str) -> dict[str, Tensor]:
        assert self.captioner is not None
        values = self.attribute_values(batch["factors"]).cpu()  # (B, A)
        draw = self.captioner.draw(values)  # a caption per image, naming some of its attributes
        tokens = self.vocab.encode(draw.texts, self.length).to(self.device)
        if stage == "train" and self.word_dropout > 0:  # template words to <unk>, never a value's words
            drop = (torch.rand(tokens.shape, device=tokens.device) < self.word_dropout)
            drop &= (tokens != PAD) & ~torch.isin(tokens, self.value_ids)
            tokens = tokens.masked_fill(drop, UNK)
        describes = matches(values, draw.said, values).to(self.device)  # (B, B): caption i describes image j
        img = self.project(self.head(self.encode(batch["x"])))  # (B, D)
        txt = self.project(self.text_encoder(tokens))  # (B, D)
        tau = self.temperature()
        i2t = info_nce(img, txt, None, None, tau, chunk=self.loss_chunk, positive=describes.T)
        t2i = info_nce(txt, img, None, None, tau, chunk=self.loss_chunk, positive=describes)
        with torch.no_grad():  # how often an image's closest caption in the batch describes it
            nearest = (img @ txt.T).argmax(1)
            caption_acc = describes.T[torch.arange(len(img), device=img.device), nearest].float().mean()
        return {"image_to_text": i2t / 2, "text_to_image": t2i / 2, "caption_acc": caption_acc,
                "temperature": tau.detach(), "loss": (i2t + t2i) / 2}

    def attribute_prompts(self) -> dict[str, Tensor]:
        """For each attribute, (V, D) unit prompts of its values: the normalised mean of the held-out templates'
        captions that name that value alone, in every word for it ("an image with a crimson shape")."""
        out = {}
        for i, (attribute, names) in enumerate(ATTRIBUTES.items()):
            said = [j == i for j in range(len(ATTRIBUTES))]
            prompts = []
            for v, name in enumerate(names):
                values = [v if j == i else 0 for j in range(len(ATTRIBUTES))]
                n = len(SYNONYMS[name])
                texts = [Captioner.text(values, said, t, [(k + 0.5) / n] * len(ATTRIBUTES))
                         for t in TEST_TEMPLATES for k in range(n)]
                prompts.append(F.normalize(self.embed_texts(texts).mean(0), dim=0))
            out[attribute] = torch.stack(prompts)
        return out

    def describe(self, values: Tensor) -> Tensor:
        """(n, D) unit embeddings of a held-out caption naming every attribute of each row of values (n, A)."""
        draw = Captioner(TEST_TEMPLATES, 0.0).draw(values.cpu())
        return self.embed_texts(draw.texts)

    def draw_captions(self, values: Tensor) -> Tensor:
        """(n, D) unit embeddings of one training caption of each row of values (n, A), drawn by the training
        captioner (torch's random stream)."""
        if self.captioner is None:
            raise UserError(f"this CLIP was trained on '{self.data_info.name}', whose samples have no attributes to "
                            "caption: train it on captioned data (genlab-train experiment=captioned_clip)")
        return self.embed_texts(self.captioner.draw(values.cpu()).texts)


def shape_slot(template: str) -> str:
    """A captioned-data template naming the shape alone, as a class template: "a [{size}] {shape}" -> "a {word}"."""
    return Captioner.text([0] * len(ATTRIBUTES), [False] * len(ATTRIBUTES), template).replace("shape", "{word}", 1)
