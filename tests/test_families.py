"""The family table: where embeddings, blocks, pooler and head are in each supported architecture."""

from __future__ import annotations

import pytest
import torch

from conftest import FAMILY_TYPES
from stabletune.errors import ConfigError
from stabletune.techniques.families import family_of, get_layout, init_std

EXPECTED = {  # model type -> (family, number of blocks, first block name, pooler, pooler re-init target)
    "bert": ("bert", 3, "bert.encoder.layer.0", "bert.pooler", "bert.pooler.dense"),
    "roberta": ("roberta", 3, "roberta.encoder.layer.0", None, "classifier.dense"),
    "electra": ("electra", 3, "electra.encoder.layer.0", None, "classifier.dense"),
    "xlnet": ("xlnet", 3, "transformer.layer.0", "sequence_summary", "sequence_summary.summary"),
    "bart": ("bart", 4, "model.encoder.layers.0", None, "classification_head.dense"),
    "deberta": ("deberta", 3, "deberta.encoder.layer.0", "pooler", "pooler.dense"),
    "deberta-v2": ("deberta", 3, "deberta.encoder.layer.0", "pooler", "pooler.dense"),
}


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_layout_of_each_family(make_tiny, model_type):
    model = make_tiny(model_type)
    layout = get_layout(model)
    family, n_blocks, first, pooler, pooler_reinit = EXPECTED[model_type]
    assert (layout.family, len(layout.blocks), layout.blocks[0][0], layout.pooler, layout.pooler_reinit) == \
        (family, n_blocks, first, pooler, pooler_reinit)
    assert family_of(model) == family and layout.std == 0.02
    modules = dict(model.named_modules())
    assert all(modules[name] is mod for name, mod in layout.blocks)
    # every parameter has a place; head parameters are in the head
    for name, _ in model.named_parameters():
        assert layout.locate(name)[0] != "unplaced", name
    head_param = next(n for n, _ in model.named_parameters() if n.startswith(layout.head[0] + "."))
    assert layout.locate(head_param) == ("head", None)


def test_bart_decoder_is_on_top_and_extras_are_placed(make_tiny):
    layout = get_layout(make_tiny("bart"))
    assert [n for n, _ in layout.blocks][-1] == "model.decoder.layers.1"
    assert layout.locate("model.decoder.layers.1.fc1.weight") == ("block", 3)
    assert layout.locate("model.shared.weight") == ("embeddings", None)
    assert layout.locate("model.decoder.embed_positions.weight") == ("embeddings", None)


def test_deberta_v2_extras(make_tiny):
    layout = get_layout(make_tiny("deberta-v2"))
    assert layout.locate("deberta.encoder.conv.conv.weight") == ("block", 0)
    assert layout.locate("deberta.encoder.rel_embeddings.weight") == ("embeddings", None)
    assert layout.locate("deberta.encoder.LayerNorm.weight") == ("embeddings", None)
    assert layout.locate("pooler.dense.weight") == ("head", None)


def test_electra_embeddings_project_is_an_embedding(make_tiny):
    layout = get_layout(make_tiny("electra"))
    assert layout.locate("electra.embeddings_project.weight") == ("embeddings", None)


def test_unsupported_architectures(make_tiny):
    with pytest.raises(ConfigError, match="unsupported architecture"):
        get_layout(torch.nn.Linear(2, 2))
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, bos_token_id=0,
                                                    eos_token_id=0))
    with pytest.raises(ConfigError, match="model_type 'gpt2'"):
        get_layout(gpt2)
    assert family_of(gpt2) is None
    from transformers import BertConfig, BertModel  # a family model without its classification head

    with pytest.raises(ConfigError, match="ForSequenceClassification"):
        get_layout(BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=16, vocab_size=50)))


def test_init_std_attributes():
    class C:
        init_std = 0.03

    class D:
        initializer_range = 0.01

    assert init_std(C()) == 0.03 and init_std(D()) == 0.01
    with pytest.raises(ConfigError, match="initializer_range"):
        init_std(object())
