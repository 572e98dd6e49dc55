"""GPT-2 model: equivalence with HF GPT2LMHeadModel, equal init across variants, caches."""
import pytest
import torch

import attention
from attnbench.model import GPT, GPTConfig, non_attention_state

transformers = pytest.importorskip("transformers")


def small_cfg(**kw):
    base = dict(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=50257, dropout=0.0,
                attention="baseline")
    base.update(kw)
    return GPTConfig(**base)


def load_into_hf(model: GPT):
    cfg = model.config
    hf_cfg = transformers.GPT2Config(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                                     n_positions=cfg.block_size, vocab_size=cfg.vocab_size,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     activation_function="gelu_new", layer_norm_epsilon=1e-5)
    hf_cfg._attn_implementation = "eager"
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = model.state_dict()
    new = {}
    for k in hf.state_dict():
        src = k
        if k.startswith("lm_head"):
            src = "transformer.wte.weight"
        t = ours[src]
        # HF uses Conv1D (weight stored as in x out); ours nn.Linear (out x in)
        if any(k.endswith(f"{n}.weight") for n in ("c_attn", "c_proj", "c_fc")):
            t = t.t()
        new[k] = t.clone()
    hf.load_state_dict(new, strict=False)
    return hf


def test_baseline_equals_hf_gpt2():
    torch.manual_seed(0)
    model = GPT(small_cfg(), seed=3).eval()
    # non-trivial biases so a missing bias would show
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
    hf = load_into_hf(model)
    idx = torch.randint(0, 50257, (2, 40))
    with torch.no_grad():
        ours, _ = model(idx)
        theirs = hf(idx).logits
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()


@pytest.mark.parametrize("name", ["sdpa", "gqa", "mla", "linear"])
def test_non_attention_weights_identical_across_variants(name):
    if name not in attention.VARIANTS:
        pytest.skip(f"{name} not built yet")
    a = GPT(small_cfg(attention="baseline"), seed=11)
    params = {"n_kv_head": 2} if name == "gqa" else {"kv_lora_rank": 32} if name == "mla" else {}
    b = GPT(small_cfg(attention=name, attention_params=params), seed=11)
    sa, sb = non_attention_state(a), non_attention_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_seed_changes_weights():
    a = GPT(small_cfg(), seed=1)
    b = GPT(small_cfg(), seed=2)
    assert not torch.equal(a.transformer.wte.weight, b.transformer.wte.weight)


def test_cached_decode_matches_full_forward():
    model = GPT(small_cfg(attention="sdpa"), seed=0).eval()
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        full, _ = model(idx)
        caches = model.init_caches(2, 20, idx.device, torch.float32)
        first, _ = model(idx[:, :12], caches=caches)
        rest = [model(idx[:, t:t + 1], caches=caches)[0] for t in range(12, 20)]
    dec = torch.cat([first] + rest, dim=1)
    assert torch.allclose(dec, full, atol=1e-5)


def test_loss_ignores_padding_targets():
    model = GPT(small_cfg(), seed=0).eval()
    idx = torch.randint(0, 50257, (1, 10))
    y = torch.randint(0, 50257, (1, 10))
    y_pad = y.clone()
    y_pad[:, 6:] = -100
    with torch.no_grad():
        logits, loss_pad = model(idx, y_pad)
    manual = torch.nn.functional.cross_entropy(logits[0, :6], y[0, :6])
    assert torch.allclose(loss_pad, manual, atol=1e-6)


def test_a_training_call_returns_only_the_loss():
    """``return_logits=False`` (a training step's call) gives ``(None, loss)``, the same loss."""
    torch.manual_seed(0)
    model = GPT(small_cfg(attention="sdpa"), seed=0)
    idx, y = torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))
    none, loss = model(idx, y, return_logits=False)
    assert none is None and torch.equal(loss, model(idx, y)[1])


def test_a_compiled_training_step_lets_its_backward_reuse_every_saved_buffer():
    """AOTAutograd lets the compiled backward reuse ("donate") a saved tensor's buffer only if no
    output aliases it: a logits output kept the saved logits' buffer, so the gradient of the logits
    took another 0.82 GB per step on an H200 (16 x 512).  The training call donates every one."""
    graph_compile = pytest.importorskip("torch._functorch._aot_autograd.graph_compile")
    collect = getattr(graph_compile, "collect_bw_donated_buffer_idxs", None)
    if collect is None:
        pytest.skip("this torch has no donated buffers")
    model = GPT(small_cfg(attention="sdpa", n_layer=1), seed=0)
    idx, y = torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))
    model(idx, y)  # resolves impl="auto" (as the job's prepare does), so each call compiles one graph
    seen = []

    def spy(fw_module, bw_module, meta):
        donated = collect(fw_module, bw_module, meta)
        seen.append(len(donated))
        return donated

    def donated_per_call(**kw):
        seen.clear()
        torch._dynamo.reset()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(graph_compile, "collect_bw_donated_buffer_idxs", spy)
            torch.compile(model)(idx, y, **kw)
        torch._dynamo.reset()
        return list(seen)

    training, with_logits = donated_per_call(return_logits=False), donated_per_call(return_logits=True)
    assert len(training) == len(with_logits) == 1 and training[0] > with_logits[0], (training, with_logits)


def test_evaluation_through_the_training_graph_frees_each_batch_before_the_next(tmp_path):
    """A compiled model is evaluated through its training graph (autograd on): the loss of one batch,
    and with it that batch's saved activations, must be gone before the next batch's forward."""
    import weakref

    from attnbench.batches import TokenBatches
    from attnbench.train import evaluate
    from tests.reliability_utils import synthetic_tokens

    val = TokenBatches(synthetic_tokens(tmp_path), "val", "pack", 2, 16, 0, torch.device("cpu"))
    model = GPT(small_cfg(attention="sdpa"), seed=0)
    previous, alive = [], []

    class TrainingGraph:   # what evaluate sees of a compiled model: ``_orig_mod`` and a call
        _orig_mod = model

        def __call__(self, x, y, **kw):
            alive.extend(ref() is not None for ref in previous)
            logits, loss = model(x, y, **kw)
            assert loss.requires_grad
            previous[:] = [weakref.ref(loss)]
            return logits, loss

        def train(self, mode=True):
            return model.train(mode)

    evaluate(TrainingGraph(), val, 3, torch.device("cpu"), torch.float32)
    assert alive == [False, False]


def test_evaluation_does_not_advance_the_training_rotation_stream(tmp_path):
    """Evaluation through the training graph is not a training step: LSH's step counter and rotations
    stay where training left them, so the next training step draws what it would have drawn."""
    from attnbench.batches import TokenBatches
    from attnbench.optim import begin_step
    from attnbench.train import evaluate
    from tests.reliability_utils import synthetic_tokens

    val = TokenBatches(synthetic_tokens(tmp_path), "val", "pack", 2, 16, 0, torch.device("cpu"))
    model = GPT(small_cfg(attention="lsh", attention_params={"chunk_size": 8}), seed=0).train()
    begin_step(model)
    lsh_layers = [m for m in model.modules() if hasattr(m, "begin_training_step")]
    before = [(m._step, m.train_rotations.clone()) for m in lsh_layers]

    class TrainingGraph:   # what evaluate sees of a compiled model
        _orig_mod = model

        def __call__(self, x, y, **kw):
            return model(x, y, **kw)

        def train(self, mode=True):
            return model.train(mode)

    evaluate(TrainingGraph(), val, 3, torch.device("cpu"), torch.float32)
    assert [m._step for m in lsh_layers] == [s for s, _ in before] == [1, 1]
    assert all(torch.equal(m.train_rotations, r) for m, (_, r) in zip(lsh_layers, before))


def test_block_size_enforced():
    model = GPT(small_cfg(block_size=16), seed=0)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_decode_probe_records_the_decode_steps_kernel(tmp_path):
    """The decode row names the kernel of the one-token steps, not that of the full forward run
    afterwards for the correctness check (MLA: absorbed matmul vs naive SDPA)."""
    from attnbench import measure
    from attnbench.probe import decode_probe

    torch.manual_seed(0)
    model = GPT(small_cfg(attention="mla")).eval()
    session = measure.MeasurementSession(torch.device("cpu"), tmp_path, nvml=False, codecarbon=False,
                                         idle_seconds=0, label="probe")
    session.start()
    prompt = torch.randint(0, 50257, (1, 8))
    row = decode_probe(model, prompt, 4, torch.device("cpu"), torch.float32, session, warmup=0)
    session.finish()
    assert row["kernel"] == "absorbed:matmul"
    assert model.kernel().startswith("naive:")          # what the check's full forward ran
    assert row["cache_matches_full_forward"]
