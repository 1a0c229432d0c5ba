"""Build a Llama-family decoder's ONNX graph (the signature in onnx_decoder_export.py) straight from its
safetensors, node by node with onnx.helper, one weight at a time.

Why not trace it through PyTorch (torch.onnx.export, what this project did first): tracing holds the whole model
in float32 in PyTorch plus the protobuf's copy of it, so a 7B peaked near 60 GiB, and int8 was quantized from
that float32 graph. Here each tensor is read from the checkpoint, converted (transposed to [in, out]; for int8
quantized by ONNX Runtime's own block quantizer, the call its MatMulNBitsQuantizer makes) and appended to the
external data file before the next is read: the build's peak is the largest tensor a few times over. The built
fp32 graph gives the traced one's logits within 1e-4 on SmolLM2, and its int8 blocks are byte for byte the ones
MatMulNBitsQuantizer writes from the traced graph. onnxruntime-genai's model builder would also write such graphs,
but it loads the model through transformers in full first (the same peak) and its GroupQueryAttention graphs
keep the cache in a preallocated buffer unlike every other engine here.

int8 (INT8): every weight MatMul, the vocabulary projection too, is a MatMulNBits of 8 bits in blocks of 32
along the input, symmetric, accuracy_level 4 (the activations are quantized to int8 per block of 32 at run
time, so MLAS runs integer dot products). Measured on SmolLM2-135M, 2 x 64 corpus tokens, top-1 agreement with
fp32 (perplexity 36.85 in fp32):
  quantize_dynamic, every weight MatMul (per-tensor uint8 activations)            0.55 (ppl 66.4)
  the same, down-projections left in fp32                                        0.88 (ppl 39.5)
  MatMulNBits 8-bit, blocks of 128, accuracy_level 4                              0.92 (ppl 37.0)
  MatMulNBits 8-bit, blocks of 32, accuracy_level 4                               0.97 (ppl 36.5)  <- used
  MatMulNBits 8-bit, blocks of 32, accuracy_level 0 (fp32 compute)                0.98, but ~14x slower per
                                                                                  token: MLAS dequantizes
                                                                                  the weights on every call
A decoder's activations carry outliers a single scale per tensor cannot hold (torch's dynamic int8 loses the
same way, engines/torch_decoder.py); a scale per block of 32 values can.

Supported: model_type llama with SiLU MLPs and no projection biases (`unsupported_reason` says what else is
refused). Rotary angles come from transformers' own LlamaRotaryEmbedding for every position the model has, so
any rope scaling it implements carries over, as in the traced export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from enginebench.models.safetensors_shards import read_tensor, weight_files

OPSET = 17
ONNX_FILE = "decoder.onnx"
DATA_FILE = ONNX_FILE + ".data"
SIGNATURE_FILE = "signature.json"  # layer count, key/value heads, head size, vocabulary: read by the session
INT8 = {"op": "MatMulNBits", "bits": 8, "block_size": 32, "is_symmetric": True, "accuracy_level": 4,
        "op_types_to_quantize": ["MatMul"]}
_ALIGN = 4096  # external tensors start on a page, so ONNX Runtime may map them instead of copying


def unsupported_reason(config: dict) -> str | None:
    """Why the builder cannot write this decoder's graph (None when it can)."""
    if config.get("model_type") != "llama":
        return f"model_type {config.get('model_type')!r} (the builder writes Llama graphs)"
    if config.get("hidden_act", "silu") != "silu":
        return f"hidden_act {config['hidden_act']!r} (Llama's MLP is SiLU-gated)"
    for bias in ("attention_bias", "mlp_bias"):
        if config.get(bias):
            return f"{bias} true (Llama's projections have no bias)"
    return None


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), key then value per layer."""
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return past, [name.replace("past_key_values", "present") for name in past]


class _Graph:
    """Nodes and initializers, the large ones appended to the external data file as they are made."""

    def __init__(self, out: Path):
        import onnx
        from onnx import helper

        self.onnx, self.helper = onnx, helper
        self.nodes, self.initializers = [], []
        self.data = open(out / DATA_FILE, "wb")
        self.count = 0

    def external(self, name: str, array: np.ndarray) -> str:
        onnx = self.onnx
        pad = -self.data.tell() % _ALIGN
        self.data.write(b"\0" * pad)
        offset = self.data.tell()
        self.data.write(np.ascontiguousarray(array).tobytes())
        tensor = onnx.TensorProto(name=name, dims=list(array.shape),
                                  data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(array.nbytes))):
            tensor.external_data.add(key=key, value=value)
        self.initializers.append(tensor)
        return name

    def const(self, name: str, value, dtype=np.int64) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, outputs: list[str] | None = None, domain: str = "",
           **attrs) -> str:
        self.count += 1
        outputs = outputs or [f"{name}#{self.count}"]
        self.nodes.append(self.helper.make_node(op_type, inputs, outputs, name=f"{name}#{self.count}",
                                                domain=domain or None, **attrs))
        return outputs[0]


class _LlamaBuilder:
    def __init__(self, folder: Path, out: Path, precision: str):
        self.config = json.loads((folder / "config.json").read_text())
        reason = unsupported_reason(self.config)
        if reason:
            raise ValueError(f"cannot build an ONNX graph for {folder}: {reason}")
        c = self.config
        self.hidden = int(c["hidden_size"])
        self.heads = int(c["num_attention_heads"])
        self.kv_heads = int(c.get("num_key_value_heads") or self.heads)
        self.head_dim = int(c.get("head_dim") or self.hidden // self.heads)
        self.layers = int(c["num_hidden_layers"])
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        self.max_positions = int(c.get("max_position_embeddings", 2048))
        self.folder, self.out = folder, out
        self.files = weight_files(folder)  # tensor name -> the safetensors file holding it
        self.g = _Graph(out)
        self.quantizer = None
        if precision == "int8":
            from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                         DefaultWeightOnlyQuantizer)

            self.quantizer = DefaultWeightOnlyQuantizer(DefaultWeightOnlyQuantConfig(
                block_size=INT8["block_size"], is_symmetric=INT8["is_symmetric"],
                accuracy_level=INT8["accuracy_level"], bits=INT8["bits"]))

    def read(self, name: str) -> np.ndarray:
        return read_tensor(self.files, name).astype(np.float32, copy=False)

    def signature(self) -> dict:
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim, "heads": self.heads,
                "vocab": int(self.config["vocab_size"]), "max_positions": self.max_positions}

    # -- pieces --------------------------------------------------------------------------------------------------

    def linear(self, x: str, weight: str, name: str, output: str | None = None) -> str:
        """x @ weight.T: MatMul on the [in, out] float32 weight, or MatMulNBits on its int8 blocks."""
        w = self.read(weight)  # [out, in], as torch.nn.Linear keeps it
        n, k = w.shape
        kn = np.ascontiguousarray(w.T)
        del w
        outputs = [output] if output else None
        if self.quantizer is None:
            return self.g.op("MatMul", [x, self.g.external(f"{name}.weight", kn)], name, outputs=outputs)
        packed, scales, _ = self.quantizer.qbits_block_quant(kn)
        inputs = [x, self.g.external(f"{name}.weight_Q8", packed), self.g.external(f"{name}.scales", scales)]
        return self.g.op("MatMulNBits", inputs, name, outputs=outputs, domain="com.microsoft", K=k, N=n,
                         bits=INT8["bits"], block_size=INT8["block_size"], accuracy_level=INT8["accuracy_level"])

    def rms_norm(self, x: str, weight: str, name: str) -> str:
        g = self.g
        square = g.op("Pow", [x, "two"], name)
        mean = g.op("ReduceMean", [square], name, axes=[-1], keepdims=1)
        root = g.op("Sqrt", [g.op("Add", [mean, "eps"], name)], name)
        return g.op("Mul", [g.op("Div", [x, root], name), g.external(weight, self.read(weight))], name)

    def heads_first(self, x: str, heads: int, name: str) -> str:
        """[b, n, heads * D] -> [b, heads, n, D]"""
        g = self.g
        shaped = g.op("Reshape", [x, g.const(f"{name}.shape", [0, 0, heads, self.head_dim])], name)
        return g.op("Transpose", [shaped], name, perm=[0, 2, 1, 3])

    def rotate(self, x: str, name: str) -> str:
        """Hugging Face's rotary embedding: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]."""
        g = self.g
        first, second = f"{name}.x1", f"{name}.x2"
        g.op("Split", [x, "halves"], name, outputs=[first, second], axis=-1)
        turned = g.op("Concat", [g.op("Neg", [second], name), first], name, axis=-1)
        return g.op("Add", [g.op("Mul", [x, "cos"], name), g.op("Mul", [turned, "sin"], name)], name)

    def attention(self, i: int, x: str) -> str:
        g, p = self.g, f"model.layers.{i}.self_attn"
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        q = self.rotate(self.heads_first(self.linear(x, f"{p}.q_proj.weight", f"{p}.q"), self.heads, f"{p}.q"),
                        f"{p}.q")
        k = self.rotate(self.heads_first(self.linear(x, f"{p}.k_proj.weight", f"{p}.k"), self.kv_heads, f"{p}.k"),
                        f"{p}.k")
        v = self.heads_first(self.linear(x, f"{p}.v_proj.weight", f"{p}.v"), self.kv_heads, f"{p}.v")
        keys = g.op("Concat", [past_k, k], p, outputs=[f"present.{i}.key"], axis=2)  # [b, K, T, D]
        values = g.op("Concat", [past_v, v], p, outputs=[f"present.{i}.value"], axis=2)
        grouped = g.op("Reshape", [q, "q_groups"], p)  # [b, K, G, n, D]: each key/value head serves G query heads
        keys_t = g.op("Unsqueeze", [g.op("Transpose", [keys], p, perm=[0, 1, 3, 2]), "axis2"], p)  # [b, K, 1, D, T]
        scores = g.op("Mul", [g.op("MatMul", [grouped, keys_t], p), "scale"], p)  # [b, K, G, n, T]
        scores = g.op("Where", ["allowed", scores, "lowest"], p)
        probs = g.op("Softmax", [scores], p, axis=-1)
        context = g.op("MatMul", [probs, g.op("Unsqueeze", [values, "axis2"], p)], p)  # [b, K, G, n, D]
        context = g.op("Transpose", [g.op("Reshape", [context, "q_heads"], p)], p, perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, "flat_heads"], p)  # [b, n, H * D]
        return self.linear(context, f"{p}.o_proj.weight", f"{p}.o")

    def mlp(self, i: int, x: str) -> str:
        g, p = self.g, f"model.layers.{i}.mlp"
        gate = self.linear(x, f"{p}.gate_proj.weight", f"{p}.gate")
        up = self.linear(x, f"{p}.up_proj.weight", f"{p}.up")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate], p)], p)
        return self.linear(g.op("Mul", [act, up], p), f"{p}.down_proj.weight", f"{p}.down")

    def rotary_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin [positions, D] from transformers' own rotary embedding (rope scaling included)."""
        import torch
        from transformers import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        rotary = LlamaRotaryEmbedding(LlamaConfig.from_pretrained(str(self.folder)))
        positions = torch.arange(self.max_positions)[None, :]
        with torch.no_grad():
            cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
        return cos[0].float().numpy(), sin[0].float().numpy()

    # -- the graph -----------------------------------------------------------------------------------------------

    def build(self) -> None:
        onnx, helper, g = self.g.onnx, self.g.helper, self.g
        past_names, present_names = cache_names(self.layers)
        d, half = self.head_dim, self.head_dim // 2
        cos, sin = self.rotary_tables()
        g.external("cos_table", cos)
        g.external("sin_table", sin)
        g.const("two", 2.0, np.float32)
        g.const("eps", self.eps, np.float32)
        g.const("scale", d ** -0.5, np.float32)
        g.const("lowest", np.finfo(np.float32).min, np.float32)
        g.const("halves", [half, half])
        g.const("axis2", [2])
        g.const("zero", 0)
        g.const("one", 1)
        g.const("q_groups", [0, self.kv_heads, self.heads // self.kv_heads, -1, d])
        g.const("q_heads", [0, self.heads, -1, d])
        g.const("flat_heads", [0, 0, self.heads * d])

        # positions past .. past + n - 1 and the causal mask over the whole context, once for every layer
        past_len = g.op("Squeeze", [g.op("Shape", [past_names[0]], "pos", start=2, end=3)], "pos")
        tokens = g.op("Squeeze", [g.op("Shape", ["input_ids"], "pos", start=1, end=2)], "pos")
        total = g.op("Add", [past_len, tokens], "pos")
        q_pos = g.op("Range", [past_len, total, "one"], "pos")
        k_pos = g.op("Range", ["zero", total, "one"], "pos")
        g.op("Gather", ["cos_table", q_pos], "pos", outputs=["cos"], axis=0)
        g.op("Gather", ["sin_table", q_pos], "pos", outputs=["sin"], axis=0)
        g.op("LessOrEqual", [g.op("Unsqueeze", [k_pos, "zero"], "pos"), g.op("Unsqueeze", [q_pos, "one"], "pos")],
             "pos", outputs=["allowed"])  # [n, T]

        embed = "model.embed_tokens.weight"
        x = g.op("Gather", [g.external(embed, self.read(embed)), "input_ids"], "embed", axis=0)
        for i in range(self.layers):
            p = f"model.layers.{i}"
            x = g.op("Add", [x, self.attention(i, self.rms_norm(x, f"{p}.input_layernorm.weight", p))], p)
            x = g.op("Add", [x, self.mlp(i, self.rms_norm(x, f"{p}.post_attention_layernorm.weight", p))], p)
        kept = g.op("Gather", [x, "logits_positions"], "head", axis=1)
        head = "lm_head.weight" if "lm_head.weight" in self.files else embed  # tied embeddings
        normed = self.rms_norm(kept, "model.norm.weight", "head")
        self.linear(normed, head, "lm_head", output="logits")
        g.data.close()

        def cache(name: str, axis: str):
            return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", self.kv_heads, axis, d])

        inputs = [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["batch", "tokens"]),
                  *(cache(name, "past") for name in past_names),
                  helper.make_tensor_value_info("logits_positions", onnx.TensorProto.INT64, ["kept"])]
        outputs = [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                                 ["batch", "kept", int(self.config["vocab_size"])]),
                   *(cache(name, "total") for name in present_names)]
        graph = helper.make_graph(g.nodes, "llama-decoder", inputs, outputs, g.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="enginebench")
        onnx.save(model, str(self.out / ONNX_FILE))
        (self.out / SIGNATURE_FILE).write_text(json.dumps(self.signature()))


def build(model_path: str, out: Path, precision: str) -> None:
    _LlamaBuilder(Path(model_path), Path(out), precision).build()


if __name__ == "__main__":
    build(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
