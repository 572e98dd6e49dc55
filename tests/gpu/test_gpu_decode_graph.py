"""CUDA-graph decode (attnbench.decode.GraphDecoder) on the GPU: for every variant with a
fixed-shape step, the captured step's logits equal the same step run eagerly and one full
forward over the same tokens (bf16 tolerance, as the probe's check), over two prompts with
one capture (the graph is replayed on refilled caches)."""
import pytest
import torch

from attnbench import decode
from attnbench.model import GPT, GPTConfig

CASES = [
    ("baseline", {}), ("sdpa", {}), ("flash2", {}), ("flex", {}), ("flex", {"score_mod": "alibi"}),
    ("sliding_window", {"window": 16}), ("gqa", {"n_kv_head": 2}), ("gqa", {"n_kv_head": 1}),
    ("mla", {}), ("mla", {"qk_rope_head_dim": 16, "q_lora_rank": 64}), ("linear", {}),
]
P, N, B = 24, 40, 2


def bf16_close(got, ref):
    scale = ref.float().abs().max().item()
    diff = (got.float() - ref.float()).abs().max().item()
    return diff <= 5e-2 * max(1.0, scale), diff, scale


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}-{p}" for n, p in CASES])
@torch.inference_mode()
def test_graph_decode_matches_eager_static_step_and_full_forward(name, params, gpu_log):
    dev = torch.device("cuda")
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=128, vocab_size=512, dropout=0.0,
                    attention=name, attention_params=dict(params))
    torch.manual_seed(0)
    model = GPT(cfg, seed=0).to(dev).to(torch.bfloat16).eval()
    dec = decode.GraphDecoder(model, B, P + N)
    assert dec.kernel.startswith("static:")
    report = {}
    for seed in (1, 2):
        tokens = torch.randint(0, 512, (B, P + N), device=dev, generator=torch.Generator(dev).manual_seed(seed))
        dec.reset()
        graph = [dec.prefill(tokens[:, :P])[:, -1]]
        graph += [dec.step(tokens[:, t:t + 1]).clone() for t in range(P, P + N)]
        static = decode.init_static_caches(model, B, P + N, dev, torch.bfloat16)
        eager = [decode.prefill(model, tokens[:, :P], static)[:, -1]]
        eager += [decode.decode_step(model, tokens[:, t:t + 1], static) for t in range(P, P + N)]
        graph, eager = torch.stack(graph, 1), torch.stack(eager, 1)
        full = model(tokens)[0][:, P - 1:]
        # replay and eager run the same kernels on the same values: equal up to bf16 rounding
        ok_e, diff_e, _ = bf16_close(graph, eager)
        ok_f, diff_f, scale = bf16_close(graph, full)
        report[seed] = {"vs_eager_static": diff_e, "vs_full_forward": diff_f, "logit_scale": scale}
        assert ok_e and ok_f, report
    tag = "_".join([name] + [f"{k}{v}" for k, v in params.items()])
    gpu_log(f"decode_graph_{tag}", {"kernel": dec.kernel, **report})
