"""The tiny-model helpers other tests build on: they load back offline and run."""

import pytest
import torch

from prefpred.testing import ARCHITECTURES, tiny_backbone, tiny_tokenizer


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_backbone_round_trip(tmp_path, arch):
    from transformers import AutoModel, AutoTokenizer

    path = tiny_backbone(arch, tmp_path / arch)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    enc = tok(["hello world", "a longer second text"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape[:2] == enc["input_ids"].shape and out.shape[-1] == 64
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_tiny_reward_model_has_one_output(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_backbone("llama", tmp_path / "rm", num_labels=1)
    tok = AutoTokenizer.from_pretrained(path)
    rm = AutoModelForSequenceClassification.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}], tokenize=False)
    assert "<|assistant|>" in text
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        assert rm(**enc).logits.shape == (1, 1)


def test_tiny_tokenizer_round_trips_text():
    tok = tiny_tokenizer()
    text = "Which response is better? 你好"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
