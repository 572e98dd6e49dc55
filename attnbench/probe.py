"""Inference probes of a trained variant: prefill latency and cached greedy decoding.

Eval mode under ``torch.inference_mode``; on CUDA the model is cast to bf16.  Prefill: one
forward over a prompt, eager and (on CUDA) captured once as a CUDA graph and replayed, its
logits checked against eager's; each timed by ``measure.timed_until_stable`` (CUDA events:
warm-up until two batches agree, repeats until p90/p50 < 1.2 or a budget runs out; an
unstable series is recorded with its ratio), the eager forwards of one batch size's prompt
lengths in turn (``measure.timed_interleaved``: launch-bound, they share the host's drift).  A
longer prompt measured faster than a shorter one is flagged in ``prefill_flags`` (a timing
error, never silently reported).  Decode:
prefill the prompt into the variant's own cache (full KV, GQA's KV, a rolling window, the
linear-attention state, MLA's latent...), then generate ``decode_tokens`` greedily, one
synchronised timing per token; GPU energy from the NVML counter over a decode window of
whole runs, repeated on CUDA until it lasts >= 2 s.  Decode runs twice where it can: eager
(the model's cached forward, one launch per op) and, on CUDA for variants with a
fixed-shape step, as one CUDA graph replayed per token (``attnbench.decode``); a variant
without one (LSH) or a CPU run records the reason (``graph_unavailable``), never a figure.
Correctness, in this process and at these shapes: before timing, ``impl="auto"`` is
resolved for each prefill shape by measuring the candidates here (forward only) and the
prefill logits are checked against a float32 copy of the model on the plain attention path
(``attnbench.selfcheck.logits_check``; a failure makes the probe a failed row with the
figures); after decoding, each mode's logits are compared with one full forward over the
same tokens.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attention.selection import attention_modules, prepare

from . import measure, selfcheck
from .decode import GRAPH_NEEDS_CUDA, GraphDecoder, GraphPrefill, unsupported_reason
from .model import build_model, load_weights
from .results import PROBE_SCHEMA, atomic_write_json, jsonable, provenance_and_job, tokens_identity, utc_now
from .settings import resolve_device


def prompt_tokens(tokens_dir, batch_size: int, length: int, device) -> torch.Tensor:
    """Real validation tokens as prompts (deterministic), shape (batch_size, length)."""
    arr = np.load(Path(tokens_dir) / "val.npy")
    flat = arr.reshape(-1).astype(np.int64)
    need = batch_size * length
    reps = -(-need // len(flat))
    flat = np.tile(flat, reps)[:need]
    return torch.from_numpy(flat).view(batch_size, length).to(device)


# Prefill timing (issue #20): warm up until two batches agree, then repeat until p90/p50 <
# PREFILL_TARGET or the per-mode budget runs out (``measure.timed_until_stable``); ``probe.warmup``
# and ``probe.repeats`` are the minima.  An unstable series is recorded as such, with its ratio.
PREFILL_TARGET = 1.2
PREFILL_BUDGET_S = {"cuda": 3.0}      # seconds per mode and shape; other devices: PREFILL_BUDGET_CPU_S
PREFILL_BUDGET_CPU_S = 1.0
PREFILL_FIGURES = ("ms_p50", "ms_p90", "ms_min", "ms_max", "n", "p90_over_p50", "timing_stable", "warmup_calls",
                   "tokens_per_s", "peak_allocated_bytes", "kernel")


def prefill_graph_reason(model, device) -> str | None:
    """Why this probe records no CUDA-graph prefill (None: it tries one)."""
    if device.type != "cuda":
        return GRAPH_NEEDS_CUDA
    if model.training:
        return "model in training mode: dropout and per-forward draws would be frozen into the graph"
    return None


def _prefill_figures(rec: dict, B: int, L: int, mem: dict, kernel) -> dict:
    p50 = rec["p50"]
    return {"ms_p50": p50, "ms_p90": rec["p90"], "ms_min": rec["min"], "ms_max": rec["max"], "n": rec["n"],
            "p90_over_p50": rec["p90_over_p50"], "timing_stable": rec["stable"],
            "warmup_calls": rec["warmup_calls"], "tokens_per_s": B * L / (p50 / 1000) if p50 else None,
            "peak_allocated_bytes": mem.get("peak_allocated_bytes"), "kernel": kernel, "timing": rec}


def graph_vs_eager(graph_logits, eager_logits) -> dict:
    """Max abs difference of the replayed logits from the eager ones (per batch row, to bound
    the float32 temporaries), against the decode check's tolerance (bf16: 5e-2 x scale)."""
    diff = scale = 0.0
    for g, e in zip(graph_logits, eager_logits):
        e = e.float()
        diff = max(diff, (g.float() - e).abs().max().item())
        scale = max(scale, e.abs().max().item())
    tol = (1e-3 if eager_logits.dtype == torch.float32 else 5e-2) * max(1.0, scale)
    return {"graph_vs_eager_max_abs_diff": diff, "graph_logit_scale": scale, "graph_matches_eager": bool(diff <= tol)}


def pinned_call(model, call):
    """``call`` under the kernels ``auto`` chose for the shape just tuned: every attention
    module's ``auto_pin`` now, set again before each call (shapes timed in turn would otherwise
    all run the pins of the last shape tuned)."""
    pins = [(m, m.auto_pin) for m in attention_modules(model) if hasattr(m, "auto_pin")]

    def run():
        for m, pin in pins:
            m.auto_pin = pin
        return call()
    return run


@torch.inference_mode()
def prefill_probe(model, tokens, device, repeats, warmup, kernel_check: bool = True,
                  max_seconds: float | None = None) -> dict:
    """One prompt shape's row of :func:`prefill_rows`."""
    return prefill_rows(model, [tokens], device, repeats, warmup, kernel_check, max_seconds)[0]


@torch.inference_mode()
def prefill_rows(model, prompts: list, device, repeats, warmup, kernel_check: bool = True,
                 max_seconds: float | None = None) -> list[dict]:
    """One row per prompt (the prompt lengths of one batch size): resolve ``auto`` for its
    shape, check the logits, then time the forward: eager and, on CUDA, captured once as a CUDA
    graph and replayed (its logits checked against eager's).  Each mode is timed by
    ``measure.timed_until_stable`` (``warmup``/``repeats`` are minima, ``max_seconds`` the budget
    per mode and shape).  The eager forwards of all prompts are timed in turn
    (``measure.timed_interleaved``): at batch 1 they are bound by the host's kernel launches,
    and timed one shape after another a drift of the host put a longer prompt below a shorter
    one on the H200.  Graph replays (GPU time, the headline figure) are timed one shape at a
    time, so each graph's memory is its own.  The unprefixed figures (``ms_p50``, ``kernel``,
    ...) are those of the fastest mode that passed its check (``prefill_mode``); ``eager_*``
    and ``graph_*`` keep both, ``eager_timing``/``graph_timing`` the stability records, and
    ``graph_unavailable`` says why a graph figure is missing (never a fake figure)."""
    dtype = next(model.parameters()).dtype
    if max_seconds is None:
        max_seconds = PREFILL_BUDGET_S.get(device.type, PREFILL_BUDGET_CPU_S)

    def timed(fns: dict) -> dict:
        return {k: rec for k, (_, rec) in measure.timed_interleaved(
            fns, device, warmup_min=warmup, repeats_min=repeats, max_seconds=max_seconds * len(fns),
            target_p90_over_p50=PREFILL_TARGET).items()}

    shapes = []
    for tokens in prompts:
        x = torch.randn(*tokens.shape, model.config.n_embd, device=device, dtype=dtype)
        selection = prepare(model, tokens, x, dtype, backward=False)
        del x  # not counted in the next shapes' peaks
        check = selfcheck.logits_check(model, tokens) if kernel_check else {
            "pass": None, "unavailable": "measure.kernel_check is off"}
        if check.get("pass") is False:
            raise selfcheck.KernelCheckFailed(
                f"kernel check of the prefill at batch {tokens.shape[0]} x {tokens.shape[1]} failed: logits rel. "
                f"error {check['out_rel_err']:.3g} (tolerance {check['tolerance']['out']:.2g}, kernel "
                f"{check['kernel']})", check)
        shapes.append({"tokens": tokens, "selection": selection, "check": check,
                       "forward": pinned_call(model, lambda t=tokens: model(t)), "modes": {}})

    for i, rec in timed({i: sh["forward"] for i, sh in enumerate(shapes)}).items():
        sh = shapes[i]
        measure.reset_peak_memory(device)
        sh["forward"]()
        B, L = sh["tokens"].shape
        # the kernel this shape's calls ran (its pins, set by the call), read after one of them
        sh["modes"]["eager"] = _prefill_figures(rec, B, L, measure.peak_memory(device), model.kernel())

    rows = []
    for sh in shapes:
        tokens, modes = sh["tokens"], sh["modes"]
        B, L = tokens.shape
        graph_reason, graph_check = prefill_graph_reason(model, device), {}
        if graph_reason is None:
            graph = None
            try:
                eager_logits = sh["forward"]()[0]  # the graph is captured under this shape's pins
                graph = GraphPrefill(model, tokens)
                graph_check = graph_vs_eager(graph.replay(), eager_logits)
                del eager_logits
            except Exception as err:  # a forward that cannot be captured: recorded, the eager figures stand
                graph_reason = f"CUDA graph capture failed: {type(err).__name__}: {str(err)[:300]}"
                graph = eager_logits = None
                torch.cuda.empty_cache()
            if graph is not None:
                measure.reset_peak_memory(device)
                rec = timed({0: graph.graph.replay})[0]
                modes["graph"] = _prefill_figures(rec, B, L, measure.peak_memory(device), graph.kernel)
                del graph
                torch.cuda.empty_cache()

        row: dict[str, Any] = {"batch_size": B, "prompt_len": L}
        for mode in ("eager", "graph"):
            for key in PREFILL_FIGURES:
                row[f"{mode}_{key}"] = modes.get(mode, {}).get(key)
            row[f"{mode}_timing"] = modes.get(mode, {}).get("timing")
        row["graph_unavailable"] = graph_reason
        for key in ("graph_vs_eager_max_abs_diff", "graph_logit_scale", "graph_matches_eager"):
            row[key] = graph_check.get(key)
        passed = [m for m in modes if (m == "eager" or graph_check.get("graph_matches_eager"))
                  and modes[m]["ms_p50"] is not None]
        head = min(passed, key=lambda m: modes[m]["ms_p50"]) if passed else "eager"
        fig = modes[head]
        row.update({"prefill_mode": "cuda-graph" if head == "graph" else "eager",
                    "ms_p50": fig["ms_p50"], "ms_p90": fig["ms_p90"], "ms_min": fig["ms_min"], "repeats": repeats,
                    "n": fig["n"], "p90_over_p50": fig["p90_over_p50"], "timing_stable": fig["timing_stable"],
                    "tokens_per_s": fig["tokens_per_s"], "peak_allocated_bytes": fig["peak_allocated_bytes"],
                    "kernel": fig["kernel"], "kernel_selection": sh["selection"], "kernel_check": sh["check"]})
        rows.append(row)
    return rows


PREFILL_SERIES = (("", "reported"), ("eager_", "eager"), ("graph_", "cuda-graph"))


def prefill_inversions(rows: list[dict]) -> list[dict]:
    """Per batch size and series (the reported figures, eager, cuda-graph), each pair of prompt
    lengths where the longer one measured faster than the shorter beyond the spread (the longer
    one's p90 below the shorter one's p50): ``{batch_size, series, short, long, short_p50,
    long_p50, long_p90}``.  Pure Python: the README renderers read it from committed documents."""
    found = []
    by_batch: dict[int, list[dict]] = {}
    for r in rows:
        if "status" not in r:
            by_batch.setdefault(r["batch_size"], []).append(r)
    for B, rs in sorted(by_batch.items()):
        rs = sorted(rs, key=lambda r: r["prompt_len"])
        for prefix, label in PREFILL_SERIES:
            for i, short in enumerate(rs):
                for long in rs[i + 1:]:
                    s50, l50, l90 = (short.get(prefix + "ms_p50"), long.get(prefix + "ms_p50"),
                                     long.get(prefix + "ms_p90"))
                    if None in (s50, l50, l90) or long["prompt_len"] <= short["prompt_len"]:
                        continue
                    if l90 < s50:
                        found.append({"batch_size": B, "series": label, "short": short["prompt_len"],
                                      "long": long["prompt_len"], "short_p50": s50, "long_p50": l50, "long_p90": l90})
    return found


def prefill_flags(rows: list[dict]) -> list[str]:
    """Timing errors visible in the prefill rows (:func:`prefill_inversions`): one forward over
    more tokens does more work, so a longer prompt measured faster is a measurement error,
    flagged rather than reported."""
    return [f"batch {x['batch_size']} ({x['series']}): {x['long']} tokens faster than {x['short']} tokens "
            f"(p50 {x['long_p50']:.3g} vs {x['short_p50']:.3g} ms, p90 {x['long_p90']:.3g}): timing error"
            for x in prefill_inversions(rows)]


# NVML's energy counter advances every 20-100 ms: a decode window of a fraction of a second
# would carry a large quantisation error, so on CUDA the timed decode repeats until >= 2 s.
DECODE_WINDOW_S = 2.0
MODE_FIGURES = ("ms_per_token_p50", "ms_per_token_p90", "ms_per_token_min", "tokens_per_s", "window_seconds",
                "decode_share_of_window",
                "runs", "gpu_j_per_token", "peak_allocated_bytes", "vs_full_forward_max_abs_diff",
                "matches_full_forward", "kernel")
# the row's own figures are the reported mode's (the checks are reported under their own names below)
REPORTED_FIGURES = tuple(k for k in MODE_FIGURES if k not in ("runs", "vs_full_forward_max_abs_diff",
                                                              "matches_full_forward"))


def greedy_steps(first_logits, first_tok, n_new: int, advance, read, device, record: list | None):
    """Greedy decoding after the prompt: ``n_new - 1`` steps of ``advance(tok)`` (the timed
    part: one cached forward, or one graph replay) and ``read(result) -> (logits (B, V), next
    token (B, 1))``.  Returns (tokens (B, n_new), logits (B, n_new, V)); ``record`` gets ms per
    step (synchronised)."""
    steps_logits, out, tok = [first_logits], [first_tok], first_tok
    for _ in range(n_new - 1):
        t0 = time.perf_counter() if record is not None else None
        result = advance(tok)
        if record is not None:
            measure.synchronize(device)
            record.append(1000 * (time.perf_counter() - t0))
        logits, tok = read(result)
        steps_logits.append(logits)
        out.append(tok)
    return torch.cat(out, dim=1), torch.stack(steps_logits, dim=1)


def greedy_eager(model, prompt, n_new: int, record: list | None):
    """The model's own cached decode: prefill, then one-token steps (:func:`greedy_steps`)."""
    B, P = prompt.shape
    caches = model.init_caches(B, P + n_new, prompt.device, next(model.parameters()).dtype)
    logits = model(prompt, caches=caches)[0][:, -1]
    return greedy_steps(logits, logits.argmax(-1, keepdim=True), n_new,
                        lambda tok: model(tok, caches=caches)[0],
                        lambda lg: (lg[:, -1], lg[:, -1].argmax(-1, keepdim=True)), prompt.device, record)


def greedy_graph(dec: GraphDecoder, prompt, n_new: int, record: list | None):
    """The same greedy decode with the captured static step (``dec``): eager prefill into the
    static caches, then one graph replay per token (the graph feeds its own argmax back; its
    static outputs are overwritten by the next replay, hence the copies)."""
    dec.reset()
    logits = dec.prefill(prompt)[:, -1]
    return greedy_steps(logits, dec.tok.clone(), n_new, lambda tok: dec.step(),
                        lambda lg: (lg.clone(), dec.tok.clone()), prompt.device, record)


def timed_decode(generate, prompt, n_new: int, device, session, warmup: int) -> tuple[dict, list, torch.Tensor, torch.Tensor]:
    """Warm-up runs (untimed), then one energy window of whole decode runs: one run on CPU,
    on CUDA as many as fill :data:`DECODE_WINDOW_S` (the window includes each run's prefill,
    one forward of the prompt per ``n_new`` tokens).  Returns (figures, ms per step,
    tokens and logits of the last run)."""
    B = prompt.shape[0]
    for _ in range(warmup):
        generate(prompt, n_new, None)
    measure.reset_peak_memory(device)
    per_token: list[float] = []
    runs = 0
    w = session.begin_window()
    start = time.perf_counter()
    while True:
        generated, logits = generate(prompt, n_new, per_token)
        runs += 1
        if device.type != "cuda" or time.perf_counter() - start >= DECODE_WINDOW_S:
            break
    ws = session.end_window(w, steps=runs * n_new, tokens=runs * B * n_new)
    pct = measure.percentiles(per_token)
    energy = ws.get("energy_j")
    figures = {"ms_per_token_p50": pct["p50"], "ms_per_token_p90": pct["p90"], "ms_per_token_min": pct["min"],
               "tokens_per_s": B / (pct["p50"] / 1000) if pct["p50"] else None,
               "window_seconds": ws["seconds"], "runs": runs,
               # the window's energy covers whole runs, each with its prompt's prefill: the share of
               # the window spent in timed decode steps says how much of gpu_j_per_token is decode
               "decode_share_of_window": (sum(per_token) / 1000 / ws["seconds"]) if ws["seconds"] else None,
               "gpu_j_per_token": energy / (runs * B * n_new) if energy is not None else None,
               "peak_allocated_bytes": measure.peak_memory(device).get("peak_allocated_bytes")}
    return figures, per_token, generated, logits


def check_vs_full_forward(model, prompt, generated, dec_logits, dtype) -> dict:
    """One full forward over prompt + generated tokens must give the decode's logits."""
    P = prompt.shape[1]
    full = torch.cat([prompt, generated[:, :-1]], dim=1)
    ref_logits, _ = model(full)
    ref = ref_logits[:, P - 1:].float()
    diff = (dec_logits.float() - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = diff <= 1e-3 * max(1.0, scale) if dtype == torch.float32 else diff <= 5e-2 * max(1.0, scale)
    return {"vs_full_forward_max_abs_diff": diff, "logit_scale": scale, "matches_full_forward": bool(ok)}


def graph_decode_reason(model, device) -> str | None:
    """Why this probe records no CUDA-graph decode (None: it does)."""
    reason = unsupported_reason(model)      # the variant's own reason first: it holds on any device
    if reason is None and device.type != "cuda":
        reason = GRAPH_NEEDS_CUDA
    return reason


@torch.inference_mode()
def decode_probe(model, prompt, n_new: int, device, dtype, session, warmup: int) -> dict:
    """Greedy decoding, eager (the model's cached forward) and, where the variant has a
    fixed-shape step and the device is CUDA, replayed as one CUDA graph; latency and energy
    of each, and each checked against one full forward.  The unprefixed figures
    (``ms_per_token_p50``, ``kernel``, ...) are those of the fastest mode that passed its
    check (``decode_mode``); ``eager_*`` and ``graph_*`` keep both."""
    B, P = prompt.shape
    modes: dict[str, dict] = {}

    figures, _, generated, logits = timed_decode(lambda pr, n, rec: greedy_eager(model, pr, n, rec),
                                                 prompt, n_new, device, session, warmup)
    figures["kernel"] = model.kernel()   # the one-token steps' kernel, before the check's full forward
    modes["eager"] = {**figures, **check_vs_full_forward(model, prompt, generated, logits, dtype)}

    graph_reason = graph_decode_reason(model, device)
    if graph_reason is None:
        try:
            dec = GraphDecoder(model, B, P + n_new)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # a step that cannot be captured: recorded, the eager figures stand
            graph_reason = f"CUDA graph capture failed: {type(err).__name__}: {str(err)[:300]}"
        else:
            figures, _, generated, logits = timed_decode(lambda pr, n, rec: greedy_graph(dec, pr, n, rec),
                                                         prompt, n_new, device, session, warmup)
            figures["kernel"] = dec.kernel
            modes["graph"] = {**figures, **check_vs_full_forward(model, prompt, generated, logits, dtype)}
            del dec

    row: dict[str, Any] = {"batch_size": B, "prompt_len": P, "new_tokens": n_new}
    for mode in ("eager", "graph"):
        for key in MODE_FIGURES:
            row[f"{mode}_{key}"] = modes.get(mode, {}).get(key)
    row["graph_unavailable"] = graph_reason
    correct = [m for m in modes if modes[m]["matches_full_forward"] and modes[m]["ms_per_token_p50"] is not None]
    head = min(correct, key=lambda m: modes[m]["ms_per_token_p50"]) if correct else "eager"
    fig = modes[head]
    row.update({
        "decode_mode": "cuda-graph" if head == "graph" else "eager",
        **{key: fig[key] for key in REPORTED_FIGURES},
        "cache_bytes": model.cache_bytes(B, P + n_new, dtype),
        "cache_vs_full_forward_max_abs_diff": fig["vs_full_forward_max_abs_diff"], "logit_scale": fig["logit_scale"],
        # every mode that ran must reproduce the full forward
        "cache_matches_full_forward": all(m["matches_full_forward"] for m in modes.values()),
    })
    return row


def decode_prompt_len(prompt_len: int, block_size: int, new_tokens: int) -> int:
    """The decode prompt: the longest asked for that leaves room for the new tokens in the block."""
    return min(prompt_len, block_size - new_tokens)


def oom_row(batch_size: int, prompt_len: int, err: BaseException) -> dict[str, Any]:
    """A probe row that ran out of GPU memory (the other rows go on, on a pool emptied first)."""
    torch.cuda.empty_cache()
    return {"batch_size": batch_size, "prompt_len": prompt_len, "status": "oom", "error": str(err)[:300]}


def prefill_of_batch(model, tokens_dir, B: int, lengths: list[int], device, probe_settings: dict,
                     kernel_check: bool, phase) -> list[dict]:
    """The prefill rows of one batch size, its prompt lengths timed together
    (:func:`prefill_rows`); out of memory: the lengths that fit, each alone, and an
    out-of-memory row for each one that does not."""
    p = probe_settings
    try:
        with phase("prefill"):  # eager and graph, the logits checks, the repeats
            return prefill_rows(model, [prompt_tokens(tokens_dir, B, L, device) for L in lengths], device,
                                p["repeats"], p["warmup"], kernel_check)
    except torch.OutOfMemoryError:
        pass
    if device.type == "cuda":  # outside the handler: its traceback no longer holds the failed call's tensors
        torch.cuda.empty_cache()
    rows = []
    for L in lengths:
        try:
            with phase("prefill"):
                rows.append(prefill_probe(model, prompt_tokens(tokens_dir, B, L, device), device, p["repeats"],
                                          p["warmup"], kernel_check))
        except torch.OutOfMemoryError as err:
            rows.append(oom_row(B, L, err))
    return rows


def run(settings: dict, train_dir, tokens_dir, out_path) -> dict[str, Any]:
    name, p = settings["name"], settings["probe"]
    device = resolve_device(settings["device"])
    prov, job_start = provenance_and_job(settings["seed"], settings, device)
    result: dict[str, Any] = {"schema": PROBE_SCHEMA, "variant": name, "status": "ok",
                              "provenance": prov, "job": job_start,
                              "data": {"tokens_sha256": tokens_identity(tokens_dir)}, "settings": settings}
    unavailable: dict[str, str] = {}
    metrics = json.loads((Path(train_dir) / "metrics.json").read_text())
    if metrics["status"] != "ok":
        result.update(status="skipped", reason=f"training failed: {metrics['failure']['message']}")
        result["unavailable"] = {"probe": result["reason"]}
        atomic_write_json(out_path, jsonable(result))
        return result
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    session = None
    phase = measure.PhaseClock(result["job"])  # where a probe's wall time goes (summed over batch sizes)
    try:
        with phase("load"):
            model = build_model(settings, device)
            load_weights(model, Path(train_dir) / "model.safetensors")
            model = model.to(dtype).eval()
        block = model.config.block_size
        with phase("measure_start"):
            session = measure.session_from(settings["measure"], device, Path(out_path).parent, "probe", idle=False)
            session.start()
        prefill, decode = [], []
        for B in p["batch_sizes"]:
            prefill.extend(prefill_of_batch(model, tokens_dir, B, [min(L, block) for L in p["prompt_lens"]],
                                            device, p, settings["measure"]["kernel_check"], phase))
            P = decode_prompt_len(max(p["prompt_lens"]), block, p["decode_tokens"])
            try:
                with phase("decode"):  # eager and graph, each over energy windows, the full-forward check
                    decode.append(decode_probe(model, prompt_tokens(tokens_dir, B, P, device),
                                               p["decode_tokens"], device, dtype, session, p["warmup"]))
            except torch.OutOfMemoryError as err:
                decode.append(oom_row(B, P, err))
        with phase("measure_finish"):
            summary = session.finish()
        session = None
        result["kernel"] = model.kernel()
        result["dtype"] = str(dtype).replace("torch.", "")
        result["prefill"], result["decode"] = prefill, decode
        result["prefill_flags"] = prefill_flags(prefill)
        checked = [r["graph_matches_eager"] for r in prefill if r.get("graph_matches_eager") is not None]
        result["prefill_graph_matches_eager"] = all(checked) if checked else None
        result["prefill_stable"] = all(r.get("timing_stable", False) for r in prefill if "status" not in r)
        result["cache_bytes_per_token"] = model.cache_bytes_per_token(torch.bfloat16)
        result["energy"] = summary.get("energy", {})
        result["emissions"] = summary.get("emissions", {})
        unavailable.update(summary.get("unavailable", {}))
        if device.type != "cuda":
            unavailable["decode.gpu_j_per_token"] = "no GPU: CPU run"
        graph_reasons = sorted({d["graph_unavailable"] for d in decode if d.get("graph_unavailable")})
        if graph_reasons:
            unavailable["decode.graph"] = "; ".join(graph_reasons)
        graph_reasons = sorted({d["graph_unavailable"] for d in prefill if d.get("graph_unavailable")})
        if graph_reasons:
            unavailable["prefill.graph"] = "; ".join(graph_reasons)
        result["decode_matches_full_forward"] = all(d.get("cache_matches_full_forward", False)
                                                    for d in decode if "status" not in d)
    except Exception as err:  # a probe that cannot run is a failed row, not a lost one
        if session is not None:
            session.finish()
        if isinstance(err, selfcheck.KernelCheckFailed):
            result.update(status="failed", failure={"kind": "kernel-check", "message": str(err)},
                          kernel_check=err.record)
        else:
            result.update(status="failed", failure={"kind": "error", "message": f"{type(err).__name__}: {err}"})
    result["unavailable"] = unavailable
    result["job"]["finished_utc"] = utc_now()
    atomic_write_json(out_path, jsonable(result))
    return result
