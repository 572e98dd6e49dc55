"""Data stage: tokenizer ids, chat format, split, packing/padding, bad input rows, the
ShareGPT stream reader, per-file schema detection and the Tulu loader on a local copy."""
import json
import os
import sys

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
    assert x.dtype == y.dtype == torch.int64 and b.rows.dtype == torch.int32
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
    assert x.dtype == y.dtype == torch.int64  # held as int32, served as the ids embeddings and the loss take
    assert b.stream.dtype == torch.int32 and b.stream.tolist() == stream.tolist()
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
    hub_offline(monkeypatch)
    with pytest.raises(data.DataError, match="tulu-v2"):
        data.download("tulu-v2", tmp_path / "t.jsonl")
    assert not (tmp_path / "t.jsonl").exists()


def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE for this test, also where huggingface_hub/datasets already read it at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module, attrs in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        mod = sys.modules.get(module)
        for attr in attrs:
            if mod is not None and hasattr(mod, attr):
                monkeypatch.setattr(mod, attr, True)


# --- every bad line in one error (issue 22, item 5) ------------------------------------------

def test_every_bad_line_is_named_in_one_error(tmp_path):
    raw = tmp_path / "in.jsonl"
    good = [json.dumps(conv(i)).encode() for i in range(60)]
    bad = [BAD_ROWS[0][0].rstrip(b"\n"), BAD_ROWS[2][0].rstrip(b"\n"), BAD_ROWS[3][0].rstrip(b"\n"), b"[1]"]
    raw.write_bytes(b"\n".join(good[:50] + bad + good[50:]) + b"\n")  # bad rows on lines 51-54
    with pytest.raises(data.DataError) as err:
        data.tokenize(raw, tmp_path / "out", max_len=16, val_fraction=0.3)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{raw}: 4 bad rows: line 51: invalid JSON")
    for line, problem in ((52, "messages[0].role='robot'"), (53, "messages[0].content must be a string"), (54, "expected a JSON object")):
        assert f"line {line}: {problem}" in msg
    assert "on_bad_rows: skip" in msg and "more" not in msg
    assert not (tmp_path / "out").exists(), "nothing half-written"


def test_many_bad_lines_are_counted_past_the_limit(tmp_path):
    raw = tmp_path / "in.jsonl"
    lines = [json.dumps(conv(0)).encode()] + [b'{"messages": 5}'] * 25 + [json.dumps(conv(1)).encode()]
    raw.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(data.DataError) as err:
        data.download(f"jsonl:{raw}", tmp_path / "copy.jsonl")
    msg = str(err.value)
    named = [f"line {n}:" for n in range(2, 2 + data.MAX_NAMED_BAD_ROWS)]
    assert msg.startswith(f"{raw}: 25 bad rows: ") and all(n in msg for n in named)
    assert f"line {2 + data.MAX_NAMED_BAD_ROWS}:" not in msg
    assert f"and {25 - data.MAX_NAMED_BAD_ROWS} more bad rows" in msg
    assert not (tmp_path / "copy.jsonl").exists() and not list(tmp_path.glob(".copy*"))


# --- ShareGPT -------------------------------------------------------------------------------

def sharegpt_records():
    """Records as ShareGPT V3 has them, one per case the reader must handle."""
    return [
        {"id": "a_0", "conversations": [{"from": "human", "value": "Hi there"}, {"from": "gpt", "value": "Hello!"}]},
        {"id": "b_0", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "user", "value": "2+2?"},
                                        {"from": "chatgpt", "value": "4"}, {"from": "human", "value": "café ☕?"},
                                        {"from": "bing", "value": "oui"}, {"from": "Human", "value": "and?"},
                                        {"from": "bard", "value": "done"}]},
        {"id": "c_0", "conversations": [{"from": "human", "value": "still there?"}, {"from": "gpt", "value": "  \n"},
                                        {"from": "human", "value": "hello?"}]},  # empty turn removed
        {"id": "d_0", "conversations": []},  # dropped: empty
        {"id": "e_0", "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": " "}]},  # empty
        {"id": "f_0", "conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}]},
        {"id": "g_0", "conversations": [{"from": "human", "value": 42}]},  # dropped: malformed
        {"id": "h_0", "conversations": [{"from": "gpt", "value": "I start the chat"}, {"from": "human", "value": "ok"}]},
    ]


def write_sharegpt(path, records, partial: str = ""):
    """A ShareGPT JSON array as the package ships it (indented), optionally cut off inside one
    more record; returns the byte offset where that partial record starts."""
    head = "[\n" + ",\n".join(json.dumps(r, indent=2, ensure_ascii=False) for r in records)
    if not partial:
        path.write_text(head + "\n]\n", encoding="utf-8")
        return None
    head += ",\n  "
    path.write_bytes(head.encode() + partial.encode())
    return len(head.encode())


def test_sharegpt_truncated_file_streams_maps_roles_and_counts(tmp_path):
    records = sharegpt_records()
    cut = json.dumps({"id": "z_0", "conversations": [{"from": "human", "value": "this record never ends"}]})
    src = tmp_path / "sharegpt.json"
    at = write_sharegpt(src, records, partial=cut[:60])
    with pytest.raises(json.JSONDecodeError):
        json.loads(src.read_text())  # like the package's file: not JSON as a whole
    out = tmp_path / "raw" / "sg.jsonl"
    counts = data.download(f"sharegpt:{src}", out)
    assert counts["records_read"] == 8 and counts["records_kept"] == counts["conversations"] == 4
    assert counts["records_dropped"] == {"empty": 2, "unknown_role": 1, "malformed": 1}
    assert counts["unknown_roles"] == {"robot": 1}
    assert counts["empty_turns_removed"] == 1
    assert counts["turns_by_role"] == {"human": 5, "gpt": 2, "system": 1, "user": 1, "chatgpt": 1, "bing": 1,
                                       "Human": 1, "bard": 1}
    tail = counts["truncated_tail"]
    assert tail["after_elements"] == 8 and tail["at_byte"] == at and tail["bytes"] == 60
    assert "Unterminated string" in tail["error"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["a_0", "b_0", "c_0", "h_0"]
    assert [m["role"] for m in rows[1]["messages"]] == ["system", "user", "assistant", "user", "assistant", "user",
                                                        "assistant"]
    assert rows[1]["messages"][3]["content"] == "café ☕?"
    assert [m["content"] for m in rows[2]["messages"]] == ["still there?", "hello?"]
    assert all(data.check_row(r) is None for r in rows)
    # the counts travel to the tokenize stats while they describe the file tokenized
    stats = data.tokenize(out, tmp_path / "tok", max_len=64, val_fraction=0.5, seed=1, dataset=f"sharegpt:{src}")
    sidecar = json.loads(data.download_counts_path(out).read_text())
    assert sidecar.pop("out_sha256") == stats["source_sha256"]
    assert stats["download"] == sidecar == counts and stats["dataset"] == f"sharegpt:{src}"
    with out.open("a") as fh:
        fh.write(json.dumps(conv(7)) + "\n")
    assert data.tokenize(out, tmp_path / "tok2", max_len=64, val_fraction=0.5, seed=1)["download"] is None


def test_sharegpt_complete_file_has_no_tail(tmp_path):
    src = tmp_path / "full.json"
    write_sharegpt(src, sharegpt_records()[:3])
    counts = data.download(f"sharegpt:{src}", tmp_path / "o.jsonl")
    assert counts["truncated_tail"] is None and counts["conversations"] == 3


@pytest.mark.parametrize("text,drop,complete", [
    ('[1, 23, true, null, "x\\"y", {"a": [1, 2, {"b": "é☕"}]}, [], -0.5e3]', None, None),
    ('[{"a": "é☕é☕"}, {"b": "☕☕☕☕"', 2, [{"a": "é☕é☕"}]),  # cut inside a 3-byte character
    ('[{"a": 1},', 0, [{"a": 1}]),  # cut after a comma
    ('[{"a": 1}', 0, [{"a": 1}]),  # no closing bracket
])
@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_json_array_stream_chunk_boundaries(tmp_path, text, drop, complete, chunk):
    path = tmp_path / "a.json"
    raw = text.encode()[:len(text.encode()) - (drop or 0)]
    path.write_bytes(raw)
    stream = data.JSONArrayStream(path, chunk_bytes=chunk)
    got = list(stream)
    if drop is None:
        assert got == json.loads(text) and stream.truncated_tail is None
    else:
        assert got == complete and stream.elements == len(complete)
        start = raw.rfind(b'{"b"') if b'{"b"' in raw else len(raw)  # where the partial element starts
        assert stream.truncated_tail["at_byte"] == start and stream.truncated_tail["bytes"] == len(raw) - start


@pytest.mark.parametrize("content,problem", [
    (b"", "empty"), (b"  \n", "empty"), (b'{"a": 1}', "not a JSON array"), (b"[1 2]", "expected ','"),
    ('[{"a": "é"}, {"b": nope, "c": "long enough"}, {"d": 1}]'.encode(), "element 2 is not valid JSON .* byte 20"),
])
@pytest.mark.parametrize("chunk", [2, 1 << 20])
def test_json_array_stream_rejects_what_is_not_an_array(tmp_path, content, problem, chunk):
    path = tmp_path / "a.json"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=problem):
        list(data.JSONArrayStream(path, chunk_bytes=chunk))


def test_sharegpt_source_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.download(f"sharegpt:{tmp_path}/nope.json", tmp_path / "o.jsonl")
    assert data.parse_source("sharegpt") == ("sharegpt", None)
    assert data.dataset_tag("sharegpt") == "sharegpt"
    assert data.dataset_tag("sharegpt:/x/dump.json").startswith("sharegpt-dump-")
    assert data.dataset_tag("tulu-v2:/x/tulu_local/").startswith("tulu-v2-tulu_local-")


# --- jsonl: schema detected per file ---------------------------------------------------------

def sharegpt_row(i):
    return {"id": f"s{i}", "conversations": [{"from": "human", "value": f"question {i} " * (i % 5 + 1)},
                                             {"from": "gpt", "value": f"answer {i}"}]}


def test_jsonl_in_sharegpt_schema_is_accepted(tmp_path):
    raw = tmp_path / "sg.jsonl"
    write_jsonl(raw, [sharegpt_row(i) for i in range(30)])
    stats = data.tokenize(raw, tmp_path / "out", max_len=32, val_fraction=0.3)
    assert stats["schema"] == "sharegpt" and stats["conversations"] == 30
    tulu = tmp_path / "tulu.jsonl"
    write_jsonl(tulu, [{"messages": [{"role": "user", "content": f"question {i} " * (i % 5 + 1)},
                                     {"role": "assistant", "content": f"answer {i}"}]} for i in range(30)])
    same = data.tokenize(tulu, tmp_path / "out2", max_len=32, val_fraction=0.3)
    assert np.array_equal(np.load(tmp_path / "out" / "train.npy"), np.load(tmp_path / "out2" / "train.npy"))
    assert same["schema"] == "tulu"
    copy = tmp_path / "copy.jsonl"
    counts = data.download(f"jsonl:{raw}", copy)
    assert counts["schema"] == "sharegpt"
    assert json.loads(copy.read_text().splitlines()[0])["messages"][1] == {"role": "assistant", "content": "answer 0"}


def test_jsonl_rows_must_keep_the_files_schema(tmp_path):
    raw = tmp_path / "mixed.jsonl"
    write_jsonl(raw, [conv(0), conv(1), sharegpt_row(2), conv(3)])
    with pytest.raises(data.DataError) as err:
        data.tokenize(raw, tmp_path / "out", max_len=16)
    assert "line 3: missing key 'messages'" in str(err.value) and "one schema per file" in str(err.value)
    raw.write_text("\n".join(json.dumps(r) for r in [sharegpt_row(0), sharegpt_row(1), conv(2),
                                                     {"conversations": [{"from": "alien", "value": "x"}]}]) + "\n")
    with pytest.raises(data.DataError) as err:
        data.tokenize(raw, tmp_path / "out", max_len=16)
    msg = str(err.value)
    assert "2 bad rows" in msg and "line 3: missing key 'conversations'" in msg
    assert "line 4: conversations[0].from='alien'" in msg


@pytest.mark.parametrize("on_bad_rows", ["error", "skip"])
def test_jsonl_in_neither_schema_shows_both_shapes(tmp_path, on_bad_rows):
    raw = tmp_path / "other.jsonl"
    write_jsonl(raw, [{"prompt": "hi", "completion": "hello"}, {"text": "x"}])
    with pytest.raises(data.DataError) as err:
        data.tokenize(raw, tmp_path / "out", max_len=16, on_bad_rows=on_bad_rows)
    msg = str(err.value)
    assert str(raw) in msg and "no valid conversations" in msg and "line 1:" in msg and "line 2:" in msg
    assert data.TULU_SHAPE in msg and data.SHAREGPT_SHAPE in msg


def test_split_long_conversations_keeps_every_token(tmp_path):
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [conv(i) for i in range(80)])
    full = data.tokenize(raw, tmp_path / "full", max_len=4096, val_fraction=0.2, seed=3)
    cut = data.tokenize(raw, tmp_path / "cut", max_len=8, val_fraction=0.2, seed=3)
    split = data.tokenize(raw, tmp_path / "split", max_len=8, val_fraction=0.2, seed=3, long_conversations="split")
    assert full["conversations_over_max_len"] == 0 and cut["truncated_conversations"] > 0
    assert split["truncated_conversations"] == 0 and split["tokens_dropped_by_truncation"] == 0
    assert np.array_equal(np.load(tmp_path / "full" / "val.npy"), np.load(tmp_path / "split" / "val.npy"))
    assert split["train_tokens"] == full["train_tokens"] and split["val_tokens"] == full["val_tokens"]
    assert cut["train_tokens"] + cut["val_tokens"] + cut["tokens_dropped_by_truncation"] == \
        full["train_tokens"] + full["val_tokens"]
    pad = data.tokenize(raw, tmp_path / "pad", max_len=8, val_fraction=0.2, seed=3, long_conversations="split",
                        mode="pad")
    lengths = np.load(tmp_path / "pad" / "train_lengths.npy")
    assert pad["train_rows"] == len(lengths) > pad["train_conversations"] and lengths.max() <= 8
    assert int(lengths.sum()) == full["train_tokens"]


def test_stats_reach_the_report_header_fields(tmp_path):
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [conv(i) for i in range(50)])
    stats = data.tokenize(raw, tmp_path / "out", max_len=16, val_fraction=0.2, max_conversations=30, dataset="x")
    assert stats["max_conversations"] == 30 and stats["conversations"] == 30 and stats["rows_in_file"] == 50
    for key in ("dataset", "train_conversations", "val_conversations", "train_tokens", "val_tokens"):
        assert stats[key] is not None, key


# --- the Tulu-v2 loader through `datasets`, on a local copy ---------------------------------

def import_datasets():
    if os.environ.get("CI"):  # CI installs the test extra: the real loader must run there
        import datasets
        return datasets
    return pytest.importorskip("datasets", reason="pip install -e '.[test]' installs datasets")


TULU_ROWS = [{"dataset": "sharegpt", "id": f"t{i}",
              "messages": [{"role": "user", "content": f"tulu question {i}"},
                           {"role": "assistant", "content": f"tulu answer {i}"}]} for i in range(12)]


@pytest.mark.parametrize("layout", ["hub-folder", "save_to_disk", "parquet-file", "jsonl-file"])
def test_tulu_loader_on_a_local_copy(tmp_path, monkeypatch, layout):
    datasets = import_datasets()
    hub_offline(monkeypatch)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    ds = datasets.Dataset.from_list(TULU_ROWS)
    if layout == "hub-folder":  # the hub repository's layout: data/train-*.parquet
        local = tmp_path / "tulu"
        (local / "data").mkdir(parents=True)
        ds.to_parquet(str(local / "data" / "train-00000-of-00001.parquet"))
    elif layout == "save_to_disk":
        local = tmp_path / "tulu_disk"
        datasets.DatasetDict({"train": ds}).save_to_disk(str(local))
    elif layout == "parquet-file":
        local = tmp_path / "tulu.parquet"
        ds.to_parquet(str(local))
    else:
        local = tmp_path / "tulu.jsonl"
        ds.to_json(str(local))
    out = tmp_path / "raw.jsonl"
    counts = data.download(f"tulu-v2:{local}", out)
    assert counts["conversations"] == 12
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == TULU_ROWS
    stats = data.tokenize(out, tmp_path / "tok", max_len=32, val_fraction=0.3)
    assert stats["conversations"] == 12 and stats["download"]["source"] == f"tulu-v2:{local}"


def test_tulu_loader_local_errors(tmp_path, monkeypatch):
    datasets = import_datasets()
    hub_offline(monkeypatch)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    with pytest.raises(data.DataError, match="does not exist"):
        data.download(f"tulu-v2:{tmp_path}/nope", tmp_path / "o.jsonl")
    wrong = tmp_path / "wrong.parquet"
    datasets.Dataset.from_list([{"text": "hello"}]).to_parquet(str(wrong))
    with pytest.raises(data.DataError, match="no column 'messages'"):
        data.download(f"tulu-v2:{wrong}", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
