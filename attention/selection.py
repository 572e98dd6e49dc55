"""Choosing and checking an attention module's kernel in the process that will run it.

A fast kernel is only worth measuring if it computes the module's function.  Every variant
has a plain path (``impl="reference"``); :func:`compare` runs the module as configured
against a float32 copy of itself on that path -- output and input gradient, relative error
``||fast - ref|| / ||ref||`` -- and sets each tolerance from the noise of the same plain
path in the fast path's dtype (bf16 autocast), so the check adapts to the model and dtype
instead of hard-coding an H100's figures.

:func:`autotune` is what ``impl="auto"`` means where a variant offers several kernels
(``module.auto_candidates``: SDPA's cuDNN / FLASH / EFFICIENT backends for ``sdpa``, ``gqa``
and ``mla``): each candidate is checked and timed here, on this device, at the caller's
shape, and the module pins the fastest one that passes (``module.auto_pin``).  Candidates
are listed in SDPA's own priority order and the first one within ``margin`` (2 %) of the
fastest is kept, so the choice does not flip between runs on timing noise.  On CUDA each
candidate's forward+backward is captured once as a CUDA graph and timed by replaying it
(:class:`GraphedCall`): the GPU's time alone.  Timed eagerly, one call at a training shape
measures the host -- Python, autograd, launches: 1-2 ms on an H200 for kernels that take a
fraction of that -- with 20 % noise between rounds, and ``auto`` picked FLASH in one seed and
EFFICIENT in the next (session 6).  Eager timing remains where no graph can be captured (CPU,
or a capture that fails, recorded as such).

:func:`prepare` does this for a whole model before ``torch.compile`` (one module per distinct
attention configuration; all layers of a configuration get its choice) and then runs one
eager forward so that every kernel name the compiled graph records is definite.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import statistics
import time
from typing import Any, Callable

import torch

# Error floors: a tolerance is max(floor, NOISE_FACTOR * noise of the plain path in the same
# dtype).  bf16/fp16: the kernel benchmark's limits (its fused kernels sit at 3-4e-3 on an
# H100); float32: TF32 matmuls on CUDA land near 1e-3.
FLOORS = {"half": {"out": 2e-2, "dx": 5e-2}, "float32": {"out": 5e-3, "dx": 5e-3}}
NOISE_FACTOR = 4.0


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    err = float((a - b).norm() / b.norm().clamp_min(1e-30))
    return err if math.isfinite(err) else float("inf")


def tolerance(kind: str, dtype: torch.dtype, noise: float | None) -> float:
    floor = FLOORS["half" if dtype in (torch.float16, torch.bfloat16) else "float32"][kind]
    return max(floor, NOISE_FACTOR * noise) if noise is not None and math.isfinite(noise) else floor


def autocast_ctx(device: torch.device, dtype: torch.dtype, cache: bool = True):
    """bf16/fp16 autocast (nothing for float32).  ``cache=False`` inside CUDA-graph capture: the
    autocast weight cache would outlive the capture in the graph's private memory pool."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)
    return contextlib.nullcontext()


def reference_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of ``module`` (an attention module or a whole model) whose attention
    modules run their plain path.  Raises ValueError for a module without one."""
    ref = copy.deepcopy(module).float()
    for m in attention_modules(ref):
        if not hasattr(m, "impl") or "reference" not in allowed_impls(m):
            raise ValueError(f"{type(m).__name__} has no impl='reference' path to check against")
        m.impl, m.auto_pin = "reference", None
        m.__dict__.pop("_sdpa_choice_memo", None)
    return ref


def attention_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    """``module`` itself or its submodules that follow the attention contract (``init_cache``)."""
    return [m for m in module.modules() if hasattr(m, "init_cache")]


def allowed_impls(module) -> tuple[str, ...]:
    return ("auto", "reference", *getattr(type(module), "kernels", ()))


@contextlib.contextmanager
def preserved_state(modules: list[torch.nn.Module], device: torch.device):
    """Restore the modules' state (buffers, counters kept in ``state_dict``, e.g. LSH's hash
    stream) and the RNG streams after a check, so that checking never changes training."""
    saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for m, state in zip(modules, saved):
                    m.load_state_dict(state)


def _out_and_dx(module, x, gy, device, dtype, backward: bool):
    xi = x.detach().clone().requires_grad_(backward)
    with autocast_ctx(device, dtype), (contextlib.nullcontext() if backward else torch.no_grad()):
        out = module(xi)
    dx = torch.autograd.grad(out, xi, gy.to(out.dtype))[0] if backward else None
    return out.detach(), dx


def _run_seeded(mod, x, gy, dtype, backward: bool, seed: int):
    """Output, input gradient and kernel name of ``mod`` on ``x``, from the same state and seed
    on every call (LSH draws the same rotations); the state is left as it was."""
    with preserved_state([mod], x.device):
        torch.manual_seed(seed)
        return (*_out_and_dx(mod, x, gy, x.device, dtype, backward), getattr(mod, "kernel", "?"))


def reference_outputs(module, x: torch.Tensor, dtype: torch.dtype, *, backward: bool = True,
                      seed: int = 0) -> dict[str, Any]:
    """What :func:`compare` measures ``module`` against on ``x``: the float32 plain path's
    output and input gradient, and the same path's in ``dtype`` (its noise).  Computed once
    per input and shared by every candidate kernel of :func:`autotune`."""
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1)).to(x.device)
    ref = reference_copy(module)
    ref.train(module.training)
    ref_out, ref_dx, _ = _run_seeded(ref, x.float(), gy, torch.float32, backward, seed)
    noise_out, noise_dx, _ = _run_seeded(ref, x, gy, dtype, backward, seed)
    return {"x": x, "dtype": dtype, "backward": backward, "seed": seed, "gy": gy,
            "out": ref_out, "dx": ref_dx, "noise": {"out": rel_err(noise_out, ref_out),
                                                   "dx": rel_err(noise_dx, ref_dx) if backward else None}}


def compare(module, x: torch.Tensor, dtype: torch.dtype, *, backward: bool = True, seed: int = 0,
            expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """The module as configured vs its float32 plain path on input ``x`` (B, T, C).

    Returns ``{kernel, out_rel_err, dx_rel_err, noise: {out, dx}, tolerance: {out, dx}, pass}``
    (``dx_*`` None when ``backward`` is False).  The module's state and the RNG streams are
    left as they were.  ``expected``: :func:`reference_outputs` of the same arguments, to reuse.
    """
    if getattr(module, "dropout", 0.0) > 0.0 and module.training:
        return {"pass": None, "unavailable": "dropout > 0 in training mode: outputs are random"}
    if expected is None:
        expected = reference_outputs(module, x, dtype, backward=backward, seed=seed)
    elif (expected["x"] is not x or expected["dtype"] != dtype or expected["backward"] != backward
          or expected["seed"] != seed):
        raise ValueError("compare: 'expected' was computed for other arguments")
    out, dx, kernel = _run_seeded(module, x, expected["gy"], dtype, backward, seed)
    res: dict[str, Any] = {"kernel": kernel, "out_rel_err": rel_err(out, expected["out"]),
                           "dx_rel_err": rel_err(dx, expected["dx"]) if backward else None,
                           "noise": dict(expected["noise"])}
    res["tolerance"] = {k: tolerance(k, dtype, res["noise"][k]) for k in ("out", "dx")}
    res["pass"] = res["out_rel_err"] <= res["tolerance"]["out"] and (
        not backward or res["dx_rel_err"] <= res["tolerance"]["dx"])
    return res


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    """Median per-call milliseconds (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        events = []
        for _ in range(repeats):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            events.append((s, e))
        torch.cuda.synchronize(device)
        return statistics.median(s.elapsed_time(e) for s, e in events)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def capture_stream(device: torch.device | str) -> "torch.cuda.Stream":
    """The one side stream per device on which every :func:`capture_graph` (the tuner's timers,
    the probe's graph prefill and decode) warms up and captures.  cuBLAS keeps a workspace per
    (handle, stream) for the life of the process (32 MiB on Hopper, one for the forward's thread
    and one for autograd's backward thread): a new stream per timer left 65 MiB allocated per
    candidate kernel timed, 0.26 GB at a training job's timed start (reports/h200/head-dd1e664).
    ``"cuda"``, ``torch.device("cuda")`` and ``cuda:<current>`` name one device, hence one stream."""
    device = torch.device(device)
    return _stream_of(torch.device(device.type, torch.cuda.current_device() if device.index is None else device.index))


@functools.cache
def _stream_of(device: torch.device) -> "torch.cuda.Stream":
    return torch.cuda.Stream(device)


def capture_graph(body: Callable[[], Any], device: torch.device, warmup: int = 2,
                  after_warmup: Callable[[], Any] | None = None) -> tuple["torch.cuda.CUDAGraph", Any]:
    """Run ``body()`` ``max(1, warmup)`` times on the side stream (backend choices, cuBLAS
    workspaces, allocator pools settle outside the capture; ``after_warmup()`` after each, e.g.
    to rewind a position or drop gradients), then capture one call into a ``torch.cuda.CUDAGraph``
    on the same stream.  Returns (graph, output of the captured call: static tensors, rewritten
    by each replay)."""
    side = capture_stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            body()
            if after_warmup is not None:
                after_warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        out = body()
    return graph, out


class GraphedCall:
    """``fn`` (one module's forward+backward on static tensors) captured once as a CUDA graph;
    :meth:`ms` times replays between two CUDA events, i.e. the GPU's time per call with no host
    in it.  Warm-up on a side stream first (cuBLAS/cuDNN workspaces and plans, lazy inits),
    as ``torch.cuda.graphs`` requires; gradients are set to None before capture so the graph
    owns them (each replay writes the same tensors)."""

    def __init__(self, fn: Callable[[], Any], device: torch.device, reset: Callable[[], None], warmup: int = 3):
        self.device = device
        self.graph, _ = capture_graph(fn, device, warmup, after_warmup=reset)
        self.graph.replay()
        torch.cuda.synchronize(device)
        self.replays = 1

    def calibrate(self, target_ms: float = 20.0, most: int = 2000) -> int:
        """Replays per timing: enough for ``target_ms`` of GPU time (event resolution ~0.5 us)."""
        per = self.ms(3)
        self.replays = max(5, min(most, math.ceil(target_ms / max(per, 1e-3))))
        return self.replays

    def ms(self, replays: int | None = None) -> float:
        n = replays or self.replays
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            self.graph.replay()
        end.record()
        torch.cuda.synchronize(self.device)
        return start.elapsed_time(end) / n


def graph_timers(module, impls: list[str], call: Callable[[], Any], device: torch.device,
                 reset: Callable[[], None]) -> tuple[dict[str, "GraphedCall"] | None, str]:
    """One captured graph per candidate ``impl`` (``module.auto_pin`` set while capturing), or
    ``(None, why)`` when graphs cannot time them all -- then every candidate is timed eagerly,
    so the comparison stays like for like."""
    if device.type != "cuda":
        return None, "eager: no CUDA graphs on " + device.type
    timers = {}
    try:
        for impl in impls:
            module.auto_pin = impl
            timers[impl] = GraphedCall(call, device, reset)
            timers[impl].calibrate()
    except Exception as err:  # a backend that cannot be captured here: time all eagerly
        timers.clear()
        if torch.cuda.is_available():
            torch.cuda.synchronize(device)
        return None, f"eager: CUDA graph capture failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    return timers, "cuda-graph replays (GPU time)"


def autotune(module, x: torch.Tensor, dtype: torch.dtype, *, backward: bool = True, warmup: int = 3,
             repeats: int = 10, rounds: int = 3, margin: float = 0.02, candidates: tuple[str, ...] | None = None
             ) -> dict[str, Any] | None:
    """Check and time each of ``module.auto_candidates`` on ``x``; pin the choice.

    None when the module's ``impl`` is not ``"auto"`` or it offers no candidates here (its
    ``auto`` then follows a fixed rule).  Otherwise returns ``{shape, dtype, backward,
    candidates: [{impl, kernel, out_rel_err, dx_rel_err, tolerance, pass, ms} | {impl, error}],
    chosen, rule}`` and sets ``module.auto_pin``.  Raises ``KernelCheckError`` when no
    candidate passes.
    """
    device = x.device
    if getattr(module, "impl", None) != "auto" or not hasattr(module, "auto_candidates") and candidates is None:
        return None  # a user class without impl/auto_candidates (optional in the contract) has no choice to make
    cands = tuple(module.auto_candidates(device, dtype) if candidates is None else candidates)
    if not cands:
        return None
    rejected = getattr(module, "auto_rejected", {})
    if rejected and not any(c not in rejected for c in cands):
        raise KernelCheckError(f"{type(module).__name__}: every candidate failed a check on this model: "
                               + "; ".join(f"{c}: {why}" for c, why in rejected.items()),
                               {"shape": list(x.shape), "candidates": [], "rejected": dict(rejected)})
    cands = tuple(c for c in cands if c not in rejected)
    rows, state = [], module.auto_pin
    gy = torch.randn(x.shape, generator=torch.Generator().manual_seed(7)).to(device)
    xi = x.detach().clone().requires_grad_(backward)

    def call():
        with autocast_ctx(device, dtype, cache=device.type != "cuda"), \
                (contextlib.nullcontext() if backward else torch.no_grad()):
            out = module(xi)
        if backward:
            out.backward(gy.to(out.dtype))

    def reset_grads():
        module.zero_grad(set_to_none=True)
        xi.grad = None

    rows_checked = check_rows(module, x)
    x_checked = x[:rows_checked]
    expected = reference_outputs(module, x_checked, dtype, backward=backward)
    for impl in cands:
        module.auto_pin = impl
        row: dict[str, Any] = {"impl": impl}
        try:
            row.update(compare(module, x_checked, dtype, backward=backward, expected=expected))
        except Exception as err:  # a backend that does not support these inputs here
            row = {"impl": impl, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        rows.append(row)
    # Timed in interleaved rounds (each candidate once per round, median over rounds): drift of
    # the device during tuning falls on every candidate alike instead of on the last one timed.
    timed = [r for r in rows if "error" not in r]
    per_round: dict[str, list[float]] = {r["impl"]: [] for r in timed}
    with preserved_state([module], device):
        timers, timing = graph_timers(module, [r["impl"] for r in timed], call, device,
                                      reset_grads)
        for _ in range(rounds):
            for row in timed:
                module.auto_pin = row["impl"]
                try:
                    if timers is not None:
                        per_round[row["impl"]].append(timers[row["impl"]].ms())
                    else:
                        per_round[row["impl"]].append(median_ms(call, device, warmup, repeats))
                        reset_grads()
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                    row["pass"] = False
        graphed, replays = timers is not None, {impl: t.replays for impl, t in (timers or {}).items()}
        del timers
        reset_grads()
    for row in timed:
        if "error" not in row and per_round[row["impl"]]:
            row["ms"] = statistics.median(per_round[row["impl"]])
            row["ms_per_round"] = per_round[row["impl"]]
            if row["impl"] in replays:
                row["replays_per_round"] = replays[row["impl"]]
    module.auto_pin = state
    passing = [r for r in rows if r.get("pass")]
    record = {"shape": list(x.shape), "checked_rows": rows_checked, "dtype": str(dtype).replace("torch.", ""),
              "backward": backward, "candidates": rows, "timing": timing,
              **({"rejected": dict(rejected)} if rejected else {}),
              "rule": (f"the first candidate (SDPA's priority order) within {margin:.0%} of the fastest one "
                       "that passes the check against the float32 reference path; timed "
                       + ("forward+backward" if backward else "forward") + f", median over {rounds} interleaved "
                       + ("rounds of CUDA-graph replays (GPU time)" if graphed
                          else f"rounds of the median of {repeats} eager calls"))}
    if not passing:
        raise KernelCheckError(f"{type(module).__name__}: no kernel passed the check at {list(x.shape)}: "
                               + "; ".join(_describe(r) for r in rows), record)
    fastest = min(r["ms"] for r in passing)
    chosen = next(r for r in passing if r["ms"] <= fastest * (1 + margin))
    module.auto_pin = record["chosen"] = chosen["impl"]
    return record


def check_rows(module, x: torch.Tensor, budget_bytes: int = 4 * 2**30) -> int:
    """Batch rows the float32 dense reference can check at x's length within ``budget_bytes``
    of scores (at least one; long sequences are checked on fewer rows than are timed)."""
    B, T = x.shape[0], x.shape[1]
    per_row = getattr(module, "n_head", 1) * T * T * 4 * 4
    return max(1, min(B, budget_bytes // max(1, per_row)))


def _describe(row: dict) -> str:
    if "error" in row:
        return f"{row['impl']}: {row['error']}"
    dx = f", dx {row['dx_rel_err']:.2e} (tol {row['tolerance']['dx']:.1e})" if row.get("dx_rel_err") is not None else ""
    return f"{row['impl']}: out {row['out_rel_err']:.2e} (tol {row['tolerance']['out']:.1e}){dx}"


class KernelCheckError(RuntimeError):
    """A kernel failed its check against the reference path; ``record`` holds the figures."""

    def __init__(self, message: str, record: dict | None = None):
        super().__init__(message)
        self.record = record


def config_groups(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """Attention modules grouped by (class, params): layers that share a configuration."""
    groups: dict[tuple, list] = {}
    for m in attention_modules(model):
        key = (type(m), repr(sorted(getattr(m, "params", {}).items())))
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def prepare(model: torch.nn.Module, example: torch.Tensor, x: torch.Tensor, dtype: torch.dtype, *,
            backward: bool = True, forward: Callable[[], Any] | None = None,
            only: set[int] | None = None) -> list[dict]:
    """Resolve ``impl="auto"`` for every attention configuration of ``model``, then run one
    eager forward of the model on ``example`` so that the compiled graph records definite names.

    ``x``: an input of the attention modules' shape (B, T, n_embd) at the shape the model will
    run.  ``forward``: how to call the model on ``example`` (default ``model(example)``).
    ``only``: indices into :func:`config_groups` to choose again (a kernel rejected after the
    choice, :func:`reject`); the other configurations keep their kernels.
    Returns one record per configuration (:func:`autotune`'s, or ``{"auto": "fixed rule"}``).
    """
    device = x.device
    records = []
    for i, group in enumerate(config_groups(model)):
        head = group[0]
        if only is not None and i not in only:
            records.append({"module": type(head).__name__, "layers": len(group), "impl": getattr(head, "impl", None),
                            "kept": head.auto_pin})
            continue
        rec = autotune(head, x, dtype, backward=backward)
        for m in group[1:]:
            m.auto_pin = head.auto_pin
        impl = getattr(head, "impl", None)
        records.append({"module": type(head).__name__, "layers": len(group), "impl": impl,
                        **(rec or {"auto": "fixed rule" if impl == "auto" else "pinned" if impl else "no impl"})})
    with preserved_state(attention_modules(model), device), autocast_ctx(device, dtype):
        if forward is not None:
            forward()
        else:
            model(example)
    return records


def reject(model: torch.nn.Module, failed: dict[int, str]) -> dict[int, str]:
    """Take each ``auto`` kernel a check failed out of its configuration's candidates for this model
    (``module.auto_rejected``; a new process or model starts without): ``failed`` maps an index
    into :func:`config_groups` to the reason.  Returns
    ``{index: rejected impl}`` for what was rejected; a configuration not on ``auto``, or whose
    choice was not measured, has nothing to reject (its failure stands)."""
    out = {}
    for i, group in enumerate(config_groups(model)):
        head = group[0]
        if i not in failed or getattr(head, "impl", None) != "auto" or not getattr(head, "auto_pin", None):
            continue
        pin = head.auto_pin
        for m in group:
            m.auto_rejected = {**getattr(m, "auto_rejected", {}), pin: failed[i]}
            m.auto_pin = None
        out[i] = pin
    return out
