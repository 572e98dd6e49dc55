"""Small inputs for the reliability tests: a tiny GPT-2 config, synthetic tokens and
conversations, and a runner for scripts/train.py as its own process."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "device": "cpu",
    "data": {"max_len": 32},
    "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64},
    "train": {"batch_size": 4, "seq_len": 32, "steps": 30, "warmup_steps": 2, "timing_window": 4,
              "lr_warmup_steps": 3, "eval_every": 10, "eval_batches": 1},
    "probe": {"prompt_lens": [8], "batch_sizes": [1], "decode_tokens": 4, "repeats": 1, "warmup": 0},
    "sweep": {"seq_lens": [16], "tokens": 32, "repeats": 1, "warmup": 0},
    "measure": {"nvml": False, "codecarbon": False, "idle_seconds": 0, "count_flops": False, "control_seconds": 0},
    "variants": {"baseline": {}, "lsh": {"chunk_size": 8}},
}


def tiny_settings(variant: str = "baseline", stage: str = "train", **train) -> dict:
    """Settings of one variant's ``stage`` job of the tiny config, as the workflow passes them."""
    from attnbench import settings

    cfg = copy.deepcopy(TINY)
    cfg["train"].update(train)
    return settings.stage_settings(settings.validate(cfg), stage, variant)


def synthetic_tokens(folder: Path, n_train: int = 40_000, n_val: int = 4_000) -> Path:
    """Random GPT-2 token ids in the tokenize stage's layout (pack mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / "train.npy", rng.integers(0, 50257, n_train, dtype=np.uint16))
    np.save(folder / "val.npy", rng.integers(0, 50257, n_val, dtype=np.uint16))
    return folder


WORDS = ("the cat sat on a mat while my dog ran to see what that noise was about and why it "
         "kept going all night long so we went out").split()


def conversation(i: int) -> dict:
    rng = np.random.default_rng(i)
    turns = []
    for t in range(2 + i % 3):
        words = rng.choice(WORDS, size=8 + (i * 7 + t) % 20)
        turns.append({"role": "user" if t % 2 == 0 else "assistant", "content": " ".join(words)})
    return {"messages": turns}


def write_conversations(path: Path, n: int, extra_lines: list[bytes] = ()) -> Path:
    """``n`` valid Tulu-schema rows, then ``extra_lines`` (raw bytes, e.g. bad rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(conversation(i)).encode() for i in range(n)] + list(extra_lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def script_env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ATTNBENCH_INJECT_FAULT", None)
    env.update(extra)
    return env


def start_train(settings: dict, tokens: Path, out: Path, *args: str, env=None) -> subprocess.Popen:
    """scripts/train.py as its own process (one torch thread: runs compare bit for bit)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    settings_file = out.parent / f"{out.name}.settings.json"
    settings_file.write_text(json.dumps(settings))
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), "--settings", f"@{settings_file}",
                             "--tokens-dir", str(tokens), "--out-dir", str(out), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or script_env())


def error_lines(stderr: str) -> list[str]:
    """stderr lines other than tqdm progress bars."""
    lines = [seg for line in stderr.splitlines() for seg in line.split("\r")]
    return [ln for ln in lines if ln.strip() and not ln.startswith("train ")]


def losses(out: Path) -> list[str]:
    """The per-step losses of steps.csv, as written (6 decimals)."""
    rows = (out / "steps.csv").read_text().splitlines()[1:]
    return [r.split(",")[1] for r in rows]
