"""Tiny, randomly initialised Hugging Face models and tokenizers built in milliseconds, offline.

For unit tests and smoke benchmarks only: nothing is downloaded. ``tiny_backbone(arch, dir)``
writes a model folder that ``from_pretrained`` loads like any real checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

#: A minimal chat template (role headers, one turn per block) for decoder tokenizers.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_DEFAULT_TEXTS = [
    "Which response is better? The first answer explains the code clearly.",
    "The second response is longer, uses markdown headers and a bulleted list.",
    "Both answers are wrong about the capital of Australia, which is Canberra.",
    "def add(a, b):\n    return a + b  # a tiny function",
    "Привет, как дела? 你好，世界。 Olá, tudo bem?",
]


def tiny_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512, *,
                   encoder: bool = False):
    """A byte-level BPE tokenizer trained on ``texts`` (a few ms), as a ``PreTrainedTokenizerFast``.

    ``encoder=True`` gives BERT-style ``[CLS] ... [SEP]`` specials and no chat template; otherwise
    ``<s>``/``</s>``/``<pad>`` specials and :data:`CHAT_TEMPLATE`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if encoder
                else ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>",
                      "<|end|>"])
    tok = Tokenizer(models.BPE(unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts or _DEFAULT_TEXTS) * 4, trainer)
    if encoder:
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


ARCHITECTURES = ("llama", "gemma2", "qwen2", "bert")


def tiny_config(arch: str, vocab_size: int, **overrides):
    """Config of a 2-layer, hidden-64 model of the given architecture."""
    from transformers import BertConfig, Gemma2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4)
    if arch == "llama":
        cfg = LlamaConfig(**common, num_key_value_heads=2, max_position_embeddings=512)
    elif arch == "gemma2":
        cfg = Gemma2Config(**common, num_key_value_heads=2, head_dim=16,
                           max_position_embeddings=512, sliding_window=128)
    elif arch == "qwen2":
        cfg = Qwen2Config(**common, num_key_value_heads=2, max_position_embeddings=512)
    elif arch == "bert":
        cfg = BertConfig(**common, max_position_embeddings=512)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose from {ARCHITECTURES}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_backbone(arch: str, directory: str | Path, *, seed: int = 0, num_labels: int | None = None,
                  texts: Iterable[str] | None = None) -> Path:
    """Write a tiny random model + tokenizer folder (``AutoModel`` or, with ``num_labels``, a
    sequence classifier) and return its path."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    directory = Path(directory)
    tokenizer = tiny_tokenizer(texts, encoder=arch == "bert")
    cfg = tiny_config(arch, vocab_size=len(tokenizer))
    cfg.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    if num_labels is not None:
        cfg.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = AutoModel.from_config(cfg)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def platform_venv(folder: str | Path, provided: Iterable[str] | None = None,
                  hidden: Iterable[str] = ("prefpred",)) -> Path:
    """A fresh virtual environment standing in for a platform image (a Kaggle notebook's):
    through a ``.pth`` file it sees this environment's installed distributions, those named
    in ``provided`` (canonical names; default: all) except ``hidden``, and nothing else (its
    own setuptools is removed, as the stand-in's is). Returns its ``python``."""
    import importlib.metadata as md
    import subprocess
    import venv

    from prefpred.bundle import canonical

    folder = Path(folder)
    venv.EnvBuilder(with_pip=True).create(folder / "env")
    python = folder / "env" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "setuptools"],
                   capture_output=True, check=False)
    platform = folder / "platform"
    platform.mkdir()
    hidden = {canonical(h) for h in hidden}
    wanted = None if provided is None else {canonical(p) for p in provided}
    site = Path(md.distribution("pip").locate_file(""))
    for dist in md.distributions():
        name = canonical(dist.metadata["Name"])
        if name in hidden or (wanted is not None and name not in wanted):
            continue
        for top in {f.parts[0] for f in dist.files or ()}:
            if top == ".." or top.endswith(".pth") or top.startswith("__editable__"):
                continue
            if (site / top).exists() and not (platform / top).exists():
                (platform / top).symlink_to(site / top)
    purelib = subprocess.run([python, "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    Path(purelib, "platform.pth").write_text(f"{platform}\n")
    return python
