"""CUDA-graph prefill (attnbench.decode.GraphPrefill) on the GPU: for every variant, one full
forward captured at a fixed shape (batch 1 x 128 and 16 x 512, bf16, eval) replays to the eager
forward's logits (the probe's bf16 tolerance), also after new tokens are loaded into the same
capture; and the probe's prefill row on CUDA carries both modes' figures, CUDA-event timing and
the graph check."""
import pytest
import torch

from attnbench import decode
from attnbench.model import GPT, GPTConfig

CASES = [
    ("baseline", {}), ("sdpa", {}), ("flash2", {}), ("flex", {}), ("flex", {"score_mod": "alibi"}),
    ("sliding_window", {"window": 128}), ("gqa", {"n_kv_head": 2}), ("mla", {}), ("linear", {}),
    ("lsh", {}), ("lsh", {"partition": "bucket"}),
]
SHAPES = [(1, 128), (16, 512)]


def make(name, params, dev):
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=512, vocab_size=512, dropout=0.0,
                    attention=name, attention_params=dict(params))
    torch.manual_seed(0)
    return GPT(cfg, seed=0).to(dev).to(torch.bfloat16).eval()


def bf16_close(got, ref):
    scale = ref.float().abs().max().item()
    diff = (got.float() - ref.float()).abs().max().item()
    return diff <= 5e-2 * max(1.0, scale), diff, scale


@pytest.mark.parametrize("B,L", SHAPES, ids=[f"{b}x{t}" for b, t in SHAPES])
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
@torch.inference_mode()
def test_graph_prefill_matches_eager(name, params, B, L, gpu_log):
    dev = torch.device("cuda")
    model = make(name, params, dev)
    gen = torch.Generator(dev)
    tokens = [torch.randint(0, 512, (B, L), device=dev, generator=gen.manual_seed(s)) for s in (1, 2)]
    graph = decode.GraphPrefill(model, tokens[0])
    report = {"kernel": graph.kernel}
    for i, t in enumerate(tokens):
        graph.load(t)
        got = graph.replay().clone()
        ok, diff, scale = bf16_close(got, model(t)[0])
        report[f"tokens{i}"] = {"max_abs_diff": diff, "logit_scale": scale}
        assert ok, report
    tag = "_".join([name] + [f"{k}{v}" for k, v in params.items()] + [f"{B}x{L}"])
    gpu_log(f"prefill_graph_{tag}", report)


@pytest.mark.parametrize("name", ["sdpa", "lsh"])
def test_prefill_probe_on_cuda_records_both_modes(name, gpu_log):
    from attnbench.probe import prefill_probe

    dev = torch.device("cuda")
    model = make(name, {}, dev)
    tokens = torch.randint(0, 512, (1, 128), device=dev, generator=torch.Generator(dev).manual_seed(3))
    row = prefill_probe(model, tokens, dev, repeats=10, warmup=3, max_seconds=1.0)
    gpu_log(f"prefill_probe_{name}", row)
    assert row["graph_unavailable"] is None, row["graph_unavailable"]
    assert row["graph_matches_eager"], row["graph_vs_eager_max_abs_diff"]
    assert row["eager_timing"]["method"] == row["graph_timing"]["method"] == "cuda-events"
    assert row["eager_ms_p50"] > 0 and row["graph_ms_p50"] > 0
    head = "graph" if row["prefill_mode"] == "cuda-graph" else "eager"
    assert row["ms_p50"] == row[f"{head}_ms_p50"] == min(row["eager_ms_p50"], row["graph_ms_p50"])


@pytest.mark.parametrize("name", ["baseline", "sdpa", "linear"])
def test_prefill_rows_on_cuda_time_a_batch_sizes_prompts_together(name, gpu_log):
    """The probe's prefill of one batch size (1 x 128 and 1 x 512, the eager forwards launch-bound):
    both prompts' eager series timed in turn, each row with its own graph; the rows and the probe's
    order flags are logged (the H200 run at 3877728 flagged 512 tokens faster than 128 in eager
    for three variants, timed one after the other)."""
    from attnbench.probe import prefill_flags, prefill_rows

    dev = torch.device("cuda")
    # GPT-2 124M, the default preset's shape: its eager forward at batch 1 is the launch-bound one
    cfg = GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0,
                    attention=name, attention_params={})
    torch.manual_seed(0)
    model = GPT(cfg, seed=0).to(dev).to(torch.bfloat16).eval()
    gen = torch.Generator(dev)
    prompts = [torch.randint(0, 50257, (1, L), device=dev, generator=gen.manual_seed(L)) for L in (128, 512)]
    rows = prefill_rows(model, prompts, dev, repeats=10, warmup=3, max_seconds=1.0)
    flags = prefill_flags(rows)
    gpu_log(f"prefill_rows_{name}", {"rows": rows, "flags": flags})
    assert [r["prompt_len"] for r in rows] == [128, 512]
    for r in rows:
        assert r["eager_timing"]["interleaved_with"] == 2 and r["graph_timing"]["interleaved_with"] == 1
        assert r["graph_matches_eager"], r["graph_vs_eager_max_abs_diff"]
        assert r["eager_kernel"] == r["graph_kernel"], r   # both under this shape's kernels
