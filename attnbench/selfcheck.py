"""Every job checks its own kernels: in its own process, at its own shape and dtype.

A kernel can be right in a test process and wrong in a job: cuDNN's SDPA backward plan is
cached per shape and q/k/v/o strides and reused for an output gradient of another layout, so
whatever ran before in the same process (a FLOP count, an evaluation, a warm-up, another
kernel's check) decides which plan the training steps get.  So the train job checks, right
before its first training step and again after its last one:

* **module**: each attention configuration (one module per distinct class and params, as
  configured, ``impl="auto"`` resolved) on a small random batch at the training length,
  output and input gradient against a float32 copy on the plain path
  (:func:`attention.selection.compare`).  The batch is small (2 rows) so that the check
  builds its own cuDNN plan and cannot prime the training one;
* **model**: the step model as it trains (compiled where training is compiled, autocast),
  forward and backward on one validation batch of the training shape -- the exact kernels,
  layouts and plans of the training steps -- against a float32 copy of the whole model on
  the plain attention path: the loss, the gradient reaching the input embeddings (``wpe``'s
  gradient: the input gradient summed over the batch) and all parameter gradients; and the
  logits of the model's own uncompiled forward (the training graph returns only the loss; where
  that forward runs another kernel than the compiled graph, the record names it).

Tolerances come from the same plain path run in the job's dtype (bf16 autocast): error <=
max(floor, 4 x that noise) (:func:`attention.selection.tolerance`), so they follow the model,
the data and the precision instead of one GPU's figures.  A failed check makes the row a
failed row whose reason holds the figures; training does not run (start) or its results are
not reported (end).  Checking changes nothing: gradients are dropped, and module state (LSH's
hash stream) and RNG streams are restored.

A kernel that ``impl="auto"`` chose and whose module check then fails at the start is not the
end of the job: the user asked for the fastest *correct* kernel, so the failing choice is
rejected for this model, ``auto`` chooses again among the remaining candidates, the step model
is compiled anew and checked again (:func:`fall_back`; recorded in ``kernel_fallback``, shown in
the report).  A failed model check with every module check passing is not attributed to a
kernel: the row fails.
On an H200, cuDNN's SDPA backward passed ``auto``'s check at 16 x 512 and then gave an input
gradient 138 % off at the module check's 2 x 512 in a process that had run other cuDNN calls
at that shape before (the GPU suite, session 8).  A pinned kernel (``impl: cudnn``) is never
replaced: its failure is the row's failure.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from attention.selection import (KernelCheckError, attention_modules, autocast_ctx, compare, config_groups, prepare,
                                 preserved_state, reference_copy, reject, rel_err, tolerance)

from .optim import begin_step, compile_model, cudagraph_skips, replays_graphs

MODULE_BATCH = 2
REFERENCE_BUDGET_BYTES = 4 * 2**30   # attention scores the float32 reference may hold per chunk

METHOD = ("module: each attention configuration on a random (2, T, n_embd) batch, output and input "
          "gradient vs a float32 copy on impl='reference'; model: the training step model (compiled "
          "where training is) on one validation batch of the training shape: loss, input-embedding "
          "gradient (wpe) and all parameter gradients, and the logits of the model's uncompiled forward, "
          "vs a float32 copy of the model on impl='reference'. "
          "Relative errors ||fast - ref|| / ||ref||; pass: error <= max(floor, 4 x the error of the "
          "reference path in the job's dtype)")


class KernelCheckFailed(RuntimeError):
    def __init__(self, message: str, record: dict):
        super().__init__(message)
        self.record = record


def check(model, step_model, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype, *, phase: str,
          backward: bool = True) -> dict[str, Any]:
    """Module and model checks of ``model`` (``step_model``: how it runs, e.g. compiled).

    Returns ``{phase, pass, seconds, modules: [...], model: {...}}``; ``pass`` is None when
    nothing could be compared (a user class without a reference path, dropout), with the
    reason under ``unavailable``.
    """
    t0 = time.perf_counter()
    device = x.device
    B, T = x.shape
    n_embd = model.config.n_embd
    modules = []
    gen = torch.Generator().manual_seed(1000 + T)
    xm = torch.randn(min(B, MODULE_BATCH), T, n_embd, generator=gen).to(device)
    for group in config_groups(model):
        head = group[0]
        try:
            rec = compare(head, xm, dtype, backward=backward)
        except ValueError as err:  # no reference path
            rec = {"pass": None, "unavailable": str(err)}
        modules.append({"module": type(head).__name__, "layers": len(group), **rec})
    model_rec = model_check(model, step_model, x, y, dtype, backward=backward)
    verdicts = [r.get("pass") for r in modules] + [model_rec.get("pass")]
    known = [v for v in verdicts if v is not None]
    record = {"phase": phase, "pass": all(known) if known else None, "seconds": time.perf_counter() - t0,
              "modules": modules, "model": model_rec}
    if not known:
        record["unavailable"] = "; ".join(r["unavailable"] for r in modules + [model_rec] if r.get("unavailable"))
    return record


def failure_message(record: dict) -> str:
    """One line naming every figure past its tolerance."""
    parts = []
    for m in record["modules"]:
        if m.get("pass") is False:
            parts.append(f"module {m['module']} ({m['kernel']}): " + _figures(m, ("out", "dx")))
    mr = record["model"]
    if mr.get("pass") is False:
        parts.append(f"model ({mr['kernel']}): " + _figures(mr, ("out", "loss", "dx", "grad")))
    return f"kernel check at {record['phase']} of training failed: " + "; ".join(parts)


def _figures(rec: dict, kinds) -> str:
    out = []
    for k in kinds:
        err, tol = rec.get(f"{k}_rel_err"), rec["tolerance"].get(k)
        if err is not None and tol is not None:
            out.append(f"{k} rel. error {err:.3g} (tolerance {tol:.2g}{', FAILED' if err > tol else ''})")
    return ", ".join(out)


def _reference_rows(model, T: int, B: int) -> int:
    cfg = model.config
    per_row = cfg.n_head * T * T * 4 * cfg.n_layer * 4  # scores, probabilities, mask, grads (fp32)
    return max(1, min(B, REFERENCE_BUDGET_BYTES // max(1, per_row)))


def _grads(model) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _global_rel_err(fast: list, ref: list, mask: list[bool] | None = None) -> float:
    num = den = 0.0
    for i, (f, r) in enumerate(zip(fast, ref)):
        if (mask is not None and not mask[i]) or r is None:
            continue
        f = torch.zeros_like(r) if f is None else f
        num += float((f.double() - r.double()).pow(2).sum())
        den += float(r.double().pow(2).sum())
    err = math.sqrt(num) / max(math.sqrt(den), 1e-30)
    return err if math.isfinite(err) else float("inf")


def _run(model, call, x, y, dtype, backward: bool, rows: int | None = None):
    """Logits, loss, gradients and kernel names of ``call`` (a model or step model) on (x, y), in
    chunks of ``rows`` batch rows (gradients of the full-batch mean loss), each chunk from the same
    state.  With one chunk the loss and gradients are exactly a training step's forward and
    backward.  The training graph returns no logits (``GPT.forward`` says why): they come from the
    model's own forward, uncompiled, in the same grad mode, state and seed; its kernels can differ
    from the compiled graph's (linear: fla eager, the chunked form compiled), so both are named."""
    device = x.device
    B = x.shape[0]
    rows = B if rows is None else rows
    valid = (y != -100).sum()
    model.zero_grad(set_to_none=True)
    logits, loss = [], torch.zeros((), device=device, dtype=torch.float64)
    grad_mode = torch.enable_grad if backward else torch.no_grad
    step_kernel = logits_kernel = None
    for lo in range(0, B, rows):
        xs, ys = x[lo:lo + rows], y[lo:lo + rows]
        with preserved_state(attention_modules(model), device):
            torch.manual_seed(0)
            begin_step(call)
            with autocast_ctx(device, dtype), grad_mode():
                mean_loss = call(xs, ys, return_logits=False)[1]   # exactly a training step's call
                part = mean_loss * ((ys != -100).sum() / valid)
            if backward:
                part.backward()
        step_kernel = step_kernel or model.kernel()
        with preserved_state(attention_modules(model), device), autocast_ctx(device, dtype), grad_mode():
            torch.manual_seed(0)
            begin_step(model)   # the same per-step state (LSH: the same rotations) as the step call
            logits.append(model(xs)[0].detach())
        logits_kernel = logits_kernel or model.kernel()
        loss += part.detach().double()
    grads = _grads(model) if backward else None
    model.zero_grad(set_to_none=True)
    return torch.cat(logits), float(loss), grads, (step_kernel, logits_kernel)


def forward_backward(model, step_model, x, y, dtype) -> None:
    """One training forward and backward that changes nothing (compiles a step model)."""
    _run(model, step_model, x, y, dtype, True)


def _scalar_rel_err(a: float, ref: float) -> float:
    return abs(a - ref) / max(abs(ref), 1e-30)


def model_check(model, step_model, x, y, dtype, *, backward: bool = True) -> dict[str, Any]:
    """The step model vs a float32 copy of the model on the plain attention path (see module doc)."""
    if model.config.dropout > 0 or any(getattr(m, "dropout", 0.0) > 0 for m in attention_modules(model)):
        return {"pass": None, "unavailable": "dropout > 0: outputs are random"}
    try:
        ref = reference_copy(model)
    except ValueError as err:
        return {"pass": None, "unavailable": str(err)}
    ref.train(model.training)
    device = x.device
    names = [n for n, _ in model.named_parameters()]
    in_attention = [".attn." in n for n in names]
    wpe = names.index("transformer.wpe.weight")
    fast_logits, fast_loss, fast_grads, (kernel, logits_kernel) = _run(model, step_model, x, y, dtype, backward)
    rows = _reference_rows(model, x.shape[1], x.shape[0])
    ref_logits, ref_loss, ref_grads, _ = _run(ref, ref, x, y, torch.float32, backward, rows)
    noise_logits, noise_loss, noise_grads, _ = _run(ref, ref, x, y, dtype, backward, rows)
    del ref
    rec: dict[str, Any] = {
        "kernel": kernel, "batch": list(x.shape), "reference_rows_per_chunk": rows,
        "loss": fast_loss, "reference_loss": ref_loss, "loss_abs_diff": abs(fast_loss - ref_loss),
        "loss_rel_err": _scalar_rel_err(fast_loss, ref_loss),
        "out_rel_err": rel_err(fast_logits, ref_logits),
        "noise": {"out": rel_err(noise_logits, ref_logits), "loss": _scalar_rel_err(noise_loss, ref_loss)},
    }
    if logits_kernel != kernel:   # the logits came from the uncompiled forward's kernels (see _run)
        rec["logits_kernel"] = logits_kernel
    if backward:
        rec["dx_rel_err"] = rel_err(fast_grads[wpe], ref_grads[wpe])
        rec["grad_rel_err"] = _global_rel_err(fast_grads, ref_grads)
        rec["attention_grad_rel_err"] = _global_rel_err(fast_grads, ref_grads, in_attention)
        rec["noise"].update(dx=rel_err(noise_grads[wpe], ref_grads[wpe]),
                            grad=_global_rel_err(noise_grads, ref_grads))
    rec["tolerance"] = {"out": tolerance("out", dtype, rec["noise"]["out"]),
                        "loss": tolerance("out", dtype, rec["noise"]["loss"])}
    if backward:
        rec["tolerance"].update(dx=tolerance("dx", dtype, rec["noise"]["dx"]),
                                grad=tolerance("dx", dtype, rec["noise"]["grad"]))
    rec["pass"] = all(rec[f"{k}_rel_err"] <= tol for k, tol in rec["tolerance"].items())
    del fast_logits, ref_logits, noise_logits, fast_grads, ref_grads, noise_grads
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def logits_check(model, tokens: torch.Tensor) -> dict[str, Any]:
    """Forward-only check of a model cast to its inference dtype (the probe): logits vs a float32
    copy on the plain path, tolerance from the plain path in the same dtype."""
    dtype = next(model.parameters()).dtype
    try:
        ref = reference_copy(model)
    except ValueError as err:
        return {"pass": None, "unavailable": str(err)}
    ref.eval()
    with torch.no_grad():
        fast, _ = model(tokens)
        kernel = model.kernel()
        want, _ = ref(tokens)
        noise, _ = ref.to(dtype)(tokens)
    rec = {"kernel": kernel, "batch": list(tokens.shape), "out_rel_err": rel_err(fast, want),
           "noise": {"out": rel_err(noise, want)}}
    rec["tolerance"] = {"out": tolerance("out", dtype, rec["noise"]["out"])}
    rec["pass"] = rec["out_rel_err"] <= rec["tolerance"]["out"]
    return rec


def check_job(job, result: dict, phase: str) -> None:
    """The check of a training job (``attnbench.train.Job``) at ``phase`` ("start": before the first
    step, "end": after the last), recorded in ``result["kernel_check"]``; a failure raises
    :class:`KernelCheckFailed` naming the figures (the job records a failed row).  The start check is also the first
    call of the compiled step model: if torch.compile cannot handle the variant, the job falls
    back to eager (recorded) and is checked eagerly."""
    x, y = job.check_batch()
    if not job.settings["measure"]["kernel_check"]:
        result["kernel_check"][phase] = {"pass": None, "unavailable": "measure.kernel_check is off"}
        if phase == "start" and job.resumed_from is not None:  # compile outside the timed windows
            forward_backward(job.model, job.step_model, x, y, job.dtype)
        return
    record = _check_or_eager(job, x, y, phase)
    result["kernel_check"][phase] = record
    if record["pass"] is False and phase == "start":
        record = fall_back(job, result, record, x, y)
    if record["pass"] is False:
        exhausted = (result.get("kernel_fallback") or [{}])[-1].get("exhausted")
        raise KernelCheckFailed(failure_message(record) + (f"; auto fallback exhausted: {exhausted}" if exhausted
                                                           else ""), record)


def _check_or_eager(job, x, y, phase: str) -> dict:
    """:func:`check` of the job's step model; a compiled model that fails its first call at the start
    is replaced by the eager model (recorded in ``job.compile_error``) and checked eagerly."""
    try:
        return check(job.model, job.step_model, x, y, job.dtype, phase=phase)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:
        if not job.compiled or phase != "start":
            raise
        job.compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        job.step_model, job.compiled = job.model, False
        return check(job.model, job.step_model, x, y, job.dtype, phase=phase)


def implicated(model, record: dict) -> dict[int, str] | None:
    """The ``auto`` configurations (indices into ``config_groups``, the order of ``record["modules"]``)
    whose own module check failed, with the figures -- or None when the failure is not one a
    different kernel can mend: a failed module check of a configuration that is not on a measured
    ``auto`` choice (pinned, or a fixed rule), or a failed model check with every module check
    passing (it cannot say which attention, if any, was wrong: the row fails as it is)."""
    groups = config_groups(model)
    failed = {i: m for i, m in enumerate(record["modules"]) if m.get("pass") is False}
    if not failed:
        return None
    if any(getattr(groups[i][0], "impl", None) != "auto" or not getattr(groups[i][0], "auto_pin", None)
           for i in failed):
        return None
    return {i: f"{m['module']} check: " + _figures(m, ("out", "dx")) for i, m in failed.items()}


def fall_back(job, result: dict, record: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """After a failed start check: reject the ``auto`` choices whose module check failed (for this
    model), choose again among the remaining candidates, recompile the step model and check again,
    until a check passes or the failure is not one a kernel choice can mend (:func:`implicated`;
    then the last failed record stands).  Each round is appended to ``result["kernel_fallback"]``:
    what was rejected and why, the failed check, the new choice (``exhausted``: no candidate left)."""
    names = [type(g[0]).__name__ for g in config_groups(job.model)]
    names = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]  # two configs of one class
    while record["pass"] is False:
        failed = implicated(job.model, record)
        if not failed:
            return record
        rejected = reject(job.model, failed)
        entry = {"rejected": {names[i]: impl for i, impl in rejected.items()}, "failed_check": record}
        result.setdefault("kernel_fallback", []).append(entry)
        B, T = x.shape
        # a seeded CPU generator: choosing again must not advance the RNG streams training draws from
        xm = torch.randn(B, T, job.model.config.n_embd, generator=torch.Generator().manual_seed(0)).to(x.device)
        try:
            entry["selection"] = prepare(job.model, x, xm, job.dtype, only=set(rejected))
        except KernelCheckError as err:  # no candidate left that passes: the failure stands
            entry["selection"], entry["exhausted"] = [err.record], str(err)
            return record
        if job.compiled:
            torch._dynamo.reset()  # the graphs captured the rejected kernel
            job.step_model = compile_model(job.model, job.t, job.device)
            if replays_graphs(job.step_model):
                job.cudagraph_skips_before = cudagraph_skips()
        record = _check_or_eager(job, x, y, "start")
        result["kernel_check"]["start"] = record
    return record
