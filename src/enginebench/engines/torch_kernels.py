"""torch's single-operator kernels (`enginebench ops`): ATen's CPU ops in fp32 and bf16; int8 as torch._int_mm."""

from __future__ import annotations

from enginebench.engines.kernels import LAYERNORM_EPS, Kernels, Prepared, Unsupported


class TorchKernels(Kernels):
    requires = ("torch",)

    def setup(self, threads):
        import torch

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        self.threads_info = {"threads": torch.get_num_threads(), "threads_control": "torch.set_num_threads"}

    def prepare(self, op, arrays, precision):
        import torch
        import torch.nn.functional as F

        if precision == "int8":
            return _torch_int8(op, arrays)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        fns = {"matmul": torch.matmul, "linear": F.linear, "softmax": lambda x: torch.softmax(x, -1),
               "layernorm": lambda x, g, b: F.layer_norm(x, (x.shape[-1],), g, b, LAYERNORM_EPS),
               "gelu": F.gelu, "attention": F.scaled_dot_product_attention, "add": torch.add,
               "sum": lambda x: x.sum(-1)}
        fn = fns[op]
        tensors = tuple(torch.from_numpy(a).to(dtype).contiguous() for a in arrays.values())
        return Prepared(lambda a: fn(*a), tensors, lambda out: out.float().numpy(), 4 if precision == "fp32" else 2)


def _torch_int8(op, arrays) -> Prepared:
    """torch._int_mm: int8 × int8 -> int32, oneDNN's integer GEMM on CPU (seen in ONEDNN_VERBOSE)."""
    import torch

    if not hasattr(torch, "_int_mm"):
        raise Unsupported(f"torch {torch.__version__} has no torch._int_mm (int8 × int8 -> int32)")
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    note = "torch._int_mm, " + ("oneDNN s8×s8→s32" if torch.backends.mkldnn.is_available() else
                                "s8×s8→s32 (no oneDNN in this build)")
    if op == "matmul":
        if t["a"].dim() != 2:
            raise Unsupported("torch has no batched int8 matmul on CPU: torch._int_mm takes 2-D matrices")
        return Prepared(lambda a: torch._int_mm(*a), (t["a"], t["b"]), lambda out: out.numpy(), 1, note)
    return Prepared(lambda a: torch._int_mm(a[0], a[1].t()).add_(a[2]), (t["x"], t["w"], t["b"]),
                    lambda out: out.numpy(), 1, note + ", + bias")


__all__ = ["TorchKernels"]
