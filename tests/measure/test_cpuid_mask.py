"""The CPUID mask (measure/cpuid_mask.py): a process started with it sees the smaller CPU in every library that
reads CPUID itself, and keeps its own SIGSEGV handling. Run on whatever this machine is: what is hidden is
AVX2 and FMA, which every machine of this kind has, and whatever AVX-512 it has besides."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from enginebench.measure import cpu_features as features
from enginebench.measure import cpuid_mask


def test_rules_gather_the_bits_of_each_register():
    assert cpuid_mask.rules({"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}) == (
        "7.0.ebx=40010000,7.0.ecx=800,7.1.eax=20,7.1.edx=80000")
    assert cpuid_mask.rules({"fma", "avx2", "sse4_2"}) == "1.0.ecx=1000,7.0.ebx=20"  # sse4_2: not a vector ISA here
    assert cpuid_mask.rules(set()) == ""


def test_every_vector_flag_a_set_can_drop_has_its_bits():
    """A flag a feature set drops without a CPUID bit would stay visible to MLAS and OpenVINO."""
    every = set().union(*features.FEATURE_SETS.values())
    assert every - {"bmi1", "bmi2", "movbe", "abm", "xsave"} <= set(cpuid_mask.FLAG_BITS)


def test_preload_keeps_a_users_own_libraries():
    assert cpuid_mask.preload_with("/c/m.so", "") == "/c/m.so"
    assert cpuid_mask.preload_with("/c/m.so", "/u/a.so:/u/b.so") == "/c/m.so /u/a.so /u/b.so"
    assert cpuid_mask.preload_with("/c/m.so", "/c/m.so /u/a.so") == "/c/m.so /u/a.so"


@pytest.fixture
def masked_env():
    """The environment of a process that sees this CPU without AVX2, FMA or any AVX-512 (kept: AVX, F16C)."""
    real = features.current().real
    if why := cpuid_mask.why_unavailable(real):
        pytest.skip(f"no CPUID mask here: {why}")
    kept = {f for f in real if f not in cpuid_mask.FLAG_BITS or f in {"avx", "f16c"}}
    env, why = cpuid_mask.environment(real, kept)
    assert why is None and env
    return {**os.environ, **env}


PROBE = """
import json
import numpy._core._multiarray_umath as umath
from enginebench.measure import cpuid_mask
seen = umath.__cpu_features__
print(json.dumps({"numpy": {k: seen[k] for k in ("AVX", "F16C", "FMA3", "AVX2", "AVX512F")},
                  "active": cpuid_mask.active(), "answered": cpuid_mask.answered()}))
"""


def _probe(env):
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_masked_process_sees_the_smaller_cpu_and_an_unmasked_one_the_whole(masked_env):
    whole = _probe({k: v for k, v in masked_env.items() if k != cpuid_mask.PRELOAD_ENV})
    assert whole["numpy"]["AVX2"] and whole["numpy"]["FMA3"] and not whole["active"]
    masked = _probe(masked_env)
    assert masked["numpy"] == {"AVX": True, "F16C": True, "FMA3": False, "AVX2": False, "AVX512F": False}
    assert masked["active"] and masked["answered"] > 0


@pytest.mark.parametrize("faulthandler", [True, False])
def test_a_real_fault_still_reaches_the_programs_handler_or_kills(masked_env, faulthandler):
    """The mask takes SIGSEGV for CPUID; any other fault goes where the program said (Python's faulthandler
    prints the stack) or, with no handler, kills the process as before."""
    flags = ["-X", "faulthandler"] if faulthandler else []
    done = subprocess.run([sys.executable, *flags, "-c", "import ctypes; ctypes.string_at(0)"],
                          capture_output=True, text=True, timeout=120, env=masked_env)
    assert done.returncode == -11
    assert ("Fatal Python error: Segmentation fault" in done.stderr) is faulthandler


def test_a_process_starts_itself_again_under_the_mask_and_records_it(tmp_path):
    """What `enginebench` (and the test process) does first: started without the mask under a narrowed set, it
    runs itself again with it, so what it measures itself (`machine`) is the smaller CPU's, and says so."""
    if why := cpuid_mask.why_unavailable(features.current().real):
        pytest.skip(f"no CPUID mask here: {why}")
    env = {k: v for k, v in os.environ.items() if k not in features.ENV_KEYS}
    env[features.ENV] = "avx2"
    probe = ("import json, os\nfrom enginebench.measure import cpu_features\nprint('started', os.getpid())\n"
             "cpu_features.reexec_masked()\n"
             "print(json.dumps({'record': cpu_features.current().record(), 'library_flags': "
             "sorted(cpu_features.current().seen_by_libraries)}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["started", "started"]  # once unmasked, once masked
    seen = json.loads(lines[-1])
    assert seen["record"]["narrowed_to"] == "avx2" and seen["record"]["cpuid_masked"] is True
    assert not {"avx512f", "avx512_vnni", "avx512_bf16"} & set(seen["library_flags"])


def test_under_a_narrowed_set_the_test_process_itself_runs_masked():
    """`ENGINEBENCH_CPU_FEATURES=avx2 make test`: the libraries the tests load in-process see the smaller CPU
    too (tests/conftest.py starts pytest again under the mask)."""
    here = features.current()
    if not here.narrowed_to or not here.cpuid_env:
        pytest.skip("run as the whole CPU, or no CPUID mask here")
    assert cpuid_mask.active()
    import numpy._core._multiarray_umath as umath

    assert not umath.__cpu_features__["AVX512F"]


# a function of this process that runs CPUID: ebx of (leaf, subleaf), the register that holds AVX2 and AVX-512F
CPUID_EBX = """
import ctypes, mmap, signal
code = bytes([0x53, 0x89, 0xf8, 0x89, 0xf1, 0x0f, 0xa2, 0x89, 0xd8, 0x5b, 0xc3])  # push rbx; cpuid; mov eax, ebx; pop rbx; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
cpuid_ebx = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)(
    ctypes.addressof(ctypes.c_char.from_buffer(page)))
"""


def test_a_cpuid_survives_a_blocked_sigsegv_and_a_freed_alternate_stack(masked_env):
    """What libraries do that would make a trapped CPUID fatal: a thread pool blocks every signal (the kernel
    kills for a blocked fault), and OpenVINO's plugin leaves a freed alternate signal stack in place (the kernel
    cannot write the handler's frame there)."""
    probe = CPUID_EBX + """
libc = ctypes.CDLL(None, use_errno=True)
avx2 = 1 << 5
before = cpuid_ebx(7, 0) & avx2
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGSEGV})
blocked = cpuid_ebx(7, 0) & avx2
class Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
size = 1 << 16
stack = libc.mmap(None, size, 3, 0x22, -1, 0)  # PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
assert libc.sigaltstack(ctypes.byref(Stack(stack, 0, size)), None) == 0
libc.munmap(ctypes.c_void_p(stack), ctypes.c_size_t(size))
freed = cpuid_ebx(7, 0) & avx2
print(before, blocked, freed)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=masked_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "0"]  # answered, and masked, each time
    whole = subprocess.run([sys.executable, "-c", CPUID_EBX + "print(cpuid_ebx(7, 0) & 1 << 5)"],
                           capture_output=True, text=True, timeout=120)
    assert whole.stdout.split() == ["32"]  # unmasked, this machine has AVX2
