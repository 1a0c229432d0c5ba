"""Decoder models: synthetic Llamas, SmolLM2 dequantized from its GGUF, user paths and --llm-config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enginebench.errors import UsageError
from enginebench.models import resolve_model
from enginebench.models.decoder_folder import decoder_from_config_file
from enginebench.models.llama_synthetic import LLAMA2_7B, TINY_LLAMA, full_config, parameter_count, write_synthetic_llama

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_logits(folder, ids: list[int]) -> np.ndarray:
    model = transformers.LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    write_synthetic_llama(folder, TINY_LLAMA, seed=0)
    return folder


def test_synthetic_llama_is_deterministic_and_loads(tiny, tmp_path):
    write_synthetic_llama(tmp_path, TINY_LLAMA, seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / name).read_bytes() == (tiny / name).read_bytes(), name
    write_synthetic_llama(tmp_path / "other", TINY_LLAMA, seed=1)
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != (tiny / "model.safetensors").read_bytes()

    spec = resolve_model(str(tiny))
    assert (spec.kind, spec.architecture, spec.gguf_path) == ("decoder", "llama", None)
    assert spec.params == parameter_count(TINY_LLAMA)


def test_synthetic_logits_are_not_degenerate(tiny):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    ids = tokenizer.encode("The import statement combines two operations; it searches for the named module.").ids
    assert max(ids) < TINY_LLAMA["vocab_size"]
    logits = hf_logits(tiny, ids)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert 1.0 < logits.std(-1).mean() < 4.0  # lm_head drawn for logits of std ~2
    assert probs.max(-1).mean() > 10 / TINY_LLAMA["vocab_size"]  # far from uniform
    assert len(set(logits.argmax(-1))) > 1  # the top token depends on the context


def test_sharded_synthetic_gives_the_same_model(tiny, tmp_path):
    write_synthetic_llama(tmp_path, TINY_LLAMA, seed=0, max_shard_bytes=100_000)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ids = list(range(3, 40))
    np.testing.assert_array_equal(hf_logits(tmp_path, ids), hf_logits(tiny, ids))


def test_llama2_7b_shape_has_7b_parameters():
    assert parameter_count(LLAMA2_7B) == 6_738_415_616  # Llama-2-7B's published count


@pytest.mark.parametrize("bad, message", [
    ({"hidden_size": 64}, "lacks"),
    ({**TINY_LLAMA, "num_attention_heads": 5}, "heads"),
    ({**TINY_LLAMA, "num_key_value_heads": 3}, "heads"),
    ({**TINY_LLAMA, "vocab_size": 100}, "vocab_size"),
    ({**TINY_LLAMA, "model_type": "gpt2"}, "Llama"),
])
def test_bad_llama_configs_are_usage_errors(bad, message):
    with pytest.raises(UsageError, match=message):
        full_config(bad)


def test_llm_config_file(tmp_path):
    file = tmp_path / "small.json"
    file.write_text(json.dumps({**TINY_LLAMA, "num_hidden_layers": 3}))
    spec = decoder_from_config_file(str(file))
    assert spec.name == "llama-synthetic-small" and spec.kind == "decoder"
    assert spec.params == parameter_count({**TINY_LLAMA, "num_hidden_layers": 3})
    assert decoder_from_config_file(str(file)).path == spec.path  # cached
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UsageError, match="llm-config"):
        decoder_from_config_file(str(tmp_path / "broken.json"))


def test_qk_permutation_round_trips():
    from enginebench.models.gguf_llama import _permute, _unpermute

    w = np.arange(12 * 5, dtype=np.float32).reshape(12, 5)
    assert not np.array_equal(_permute(w, 3), w)
    np.testing.assert_array_equal(_unpermute(_permute(w, 3), 3), w)


def test_gguf_round_trip_preserves_the_model(tiny, tmp_path):
    """HF -> f32 GGUF -> HF gives back the same weights (the Q/K permutation is undone) and tokenizer."""
    from enginebench.models.gguf_llama import hf_to_gguf

    pytest.importorskip("gguf")
    hf_to_gguf(tiny, tmp_path / "tiny.gguf", "f32")
    spec = resolve_model(str(tmp_path / "tiny.gguf"))
    assert spec.kind == "decoder" and spec.gguf_path == str((tmp_path / "tiny.gguf").resolve())
    ids = list(range(3, 60))
    np.testing.assert_allclose(hf_logits(spec.path, ids), hf_logits(tiny, ids), atol=1e-5)
    from tokenizers import Tokenizer

    text = "Class definitions 123 play some neat tricks with namespaces."
    assert (Tokenizer.from_file(f"{spec.path}/tokenizer.json").encode(text).ids
            == Tokenizer.from_file(str(tiny / "tokenizer.json")).encode(text).ids)


@pytest.fixture(scope="module")
def smollm2(require):
    pytest.importorskip("gguf")
    try:
        return resolve_model("smollm2-135m")
    except UsageError as e:  # the model package missing or broken: a failure under `make test`
        require(str(e))


def test_smollm2_dequantized_reference(smollm2):
    config = json.loads(open(f"{smollm2.path}/config.json").read())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["vocab_size"]) == (30, 576, 9, 3, 49152)
    assert config["tie_word_embeddings"] and config["torch_dtype"] == "float32"
    assert 130e6 < smollm2.params < 140e6
    assert smollm2.gguf_path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_smollm2_tokenizer_round_trips_text(smollm2):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(f"{smollm2.path}/tokenizer.json")
    text = "The with statement (PEP 343) wraps 2024 blocks; naïve café — ok?\n  Indented."
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode()) / 2  # real merges, not bytes
    assert tokenizer.encode("<|im_start|>user").ids[0] == 1  # a special token stays one id
    assert tokenizer.encode("2024").ids == [tokenizer.token_to_id(d) for d in "2024"]  # digits split one by one


def test_bfloat16_weights_are_read_as_float32(tmp_path):
    from safetensors.torch import save_file

    from enginebench.models.safetensors_shards import iter_tensors

    tensor = torch.randn(3, 8).bfloat16()
    save_file({"w": tensor}, str(tmp_path / "model.safetensors"))
    [(name, array)] = list(iter_tensors(tmp_path))
    assert name == "w" and array.dtype == np.float32
    np.testing.assert_array_equal(array, tensor.float().numpy())


def test_missing_or_corrupt_gguf_is_a_usage_error(tmp_path):
    pytest.importorskip("gguf")
    with pytest.raises(UsageError, match="does not exist"):
        resolve_model(str(tmp_path / "absent.gguf"))
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(UsageError, match="GGUF"):
        resolve_model(str(tmp_path / "bad.gguf"))
