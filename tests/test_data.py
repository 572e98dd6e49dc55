"""Data stage: tokenizer ids, chat format, split, packing/padding, and bad input rows."""
import json

import numpy as np
import pytest

from attnbench import data
from attnbench.batches import TokenBatches


def test_tokenizer_known_gpt2_ids():
    tok = data.gpt2_tokenizer("offline")
    assert tok.get_vocab_size() == 50257
    ids = tok.encode("Hello world, this is GPT-2!").ids
    assert ids == [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 0]
    assert tok.decode(ids) == "Hello world, this is GPT-2!"
    assert tok.encode("a<|endoftext|>b").ids == [64, 50256, 65]


def test_tulu_chat_format():
    text = data.format_conversation([{"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hello"}])
    assert text == "<|user|>\nhi\n<|assistant|>\nhello<|endoftext|>\n"


def test_chitchat_maps_to_messages_schema():
    rows = data.chitchat_conversations()
    first = next(rows)
    assert first["messages"][0]["role"] == "user"
    roles = [m["role"] for m in first["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:])), "roles must alternate"
    assert data.check_row(first) is None


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def conv(i):
    return {"messages": [{"role": "user", "content": f"question {i} " * (i % 7 + 1)},
                         {"role": "assistant", "content": f"answer {i}"}]}


def test_tokenize_pack_and_split_deterministic(tmp_path):
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [conv(i) for i in range(200)])
    s1 = data.tokenize(raw, tmp_path / "a", max_len=16, val_fraction=0.2, seed=5)
    s2 = data.tokenize(raw, tmp_path / "b", max_len=16, val_fraction=0.2, seed=5)
    assert s1 == {**s2, "source_file": s1["source_file"]}
    a = np.load(tmp_path / "a" / "train.npy")
    assert a.dtype == np.uint16 and np.array_equal(a, np.load(tmp_path / "b" / "train.npy"))
    assert s1["train_conversations"] + s1["val_conversations"] == 200
    assert 0 < s1["val_conversations"] < 100
    assert s1["truncated_conversations"] > 0
    assert s1["train_tokens"] == len(a)


def test_pad_mode_masks_padding(tmp_path):
    import torch

    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [conv(i) for i in range(60)])
    data.tokenize(raw, tmp_path, max_len=32, val_fraction=0.2, seed=0, mode="pad")
    lengths = np.load(tmp_path / "train_lengths.npy")
    b = TokenBatches(tmp_path, "train", "pad", 4, 32, 0, torch.device("cpu"))
    items = torch.arange(4)
    x, y = b.batch(items)
    for r in range(4):
        L = int(lengths[r])
        assert (y[r, : L - 1] != -100).all()
        assert (y[r, L - 1:] == -100).all()


def test_pack_batches_are_shifted_windows(tmp_path):
    import torch

    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [conv(i) for i in range(100)])
    data.tokenize(raw, tmp_path, max_len=32, val_fraction=0.1, seed=0)
    stream = np.load(tmp_path / "train.npy").astype(np.int64)
    b = TokenBatches(tmp_path, "train", "pack", 2, 8, 0, torch.device("cpu"))
    order = b.order(5)
    assert order.shape == (5, 2)
    x, y = b.batch(order[0])
    i = int(order[0, 0])
    assert x[0].tolist() == stream[i * 8: i * 8 + 8].tolist()
    assert y[0].tolist() == stream[i * 8 + 1: i * 8 + 9].tolist()
    # same seed, same order: every variant sees the same data
    assert torch.equal(order, TokenBatches(tmp_path, "train", "pack", 2, 8, 0, torch.device("cpu")).order(5))


BAD_ROWS = [
    (b'{"messages": [{"role": "user", "content": "x"}]\n', "invalid JSON"),
    (b'{"conversation": []}\n', "missing key 'messages'"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}\n', "role='robot'"),
    (b'{"messages": [{"role": "user", "content": 5}]}\n', "content must be a string"),
    (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', "not valid UTF-8"),
    (b'[1, 2]\n', "expected a JSON object"),
    (b'{"messages": []}\n', "non-empty list"),
]


@pytest.mark.parametrize("bad,problem", BAD_ROWS, ids=[p for _, p in BAD_ROWS])
def test_bad_row_names_file_line_and_problem(tmp_path, bad, problem):
    raw = tmp_path / "in.jsonl"
    good = json.dumps(conv(1)).encode() + b"\n"
    raw.write_bytes(good + b"\n" + bad + good)
    with pytest.raises(data.DataError) as err:
        data.tokenize(raw, tmp_path / "out", max_len=16, val_fraction=0.5)
    msg = str(err.value)
    assert str(raw) in msg and "line 3" in msg and problem in msg
    assert not (tmp_path / "out").exists(), "nothing half-written"


def test_skip_bad_rows_counts_them(tmp_path):
    raw = tmp_path / "in.jsonl"
    lines = [json.dumps(conv(i)).encode() for i in range(40)] + [bad for bad, _ in BAD_ROWS]
    raw.write_bytes(b"\n".join(lines) + b"\n")
    stats = data.tokenize(raw, tmp_path / "out", max_len=16, val_fraction=0.3, on_bad_rows="skip")
    assert stats["skipped_rows"] == len(BAD_ROWS)
    assert stats["conversations"] == 40


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_an_error(tmp_path, content):
    raw = tmp_path / "in.jsonl"
    raw.write_bytes(content)
    with pytest.raises(data.DataError, match="empty"):
        data.tokenize(raw, tmp_path / "out", max_len=16)


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    raw = tmp_path / "in.jsonl"
    raw.write_bytes(b'{"x": 1}\n{"y": 2}\n')
    with pytest.raises(data.DataError, match="no valid conversations"):
        data.tokenize(raw, tmp_path / "out", max_len=16, on_bad_rows="skip")


def test_download_user_jsonl_and_unknown_source(tmp_path):
    raw = tmp_path / "mine.jsonl"
    write_jsonl(raw, [conv(i) for i in range(3)])
    out = tmp_path / "copy.jsonl"
    assert data.download(f"jsonl:{raw}", out)["conversations"] == 3
    with pytest.raises(data.DataError, match="allowed"):
        data.download("huggingface", out)
    with pytest.raises(data.DataError, match="does not exist"):
        data.download(f"jsonl:{tmp_path}/nope.jsonl", out)


def test_tulu_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DataError, match="tulu-v2"):
        data.download("tulu-v2", tmp_path / "t.jsonl")
