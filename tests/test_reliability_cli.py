"""The scripts/ CLIs refuse bad input with one line on stderr ("error: ..."), exit code 2,
no traceback, and write nothing.  Bad dataset files through the tokenize CLI name the file,
the line and the problem; ``on_bad_rows: skip`` counts what it skipped."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from reliability_utils import (
    ROOT,
    conversation,
    script_env,
    tiny_settings,
    write_conversations,
)
from test_data import BAD_ROWS

DATA = {"max_len": 16, "val_fraction": 0.3, "mode": "pack", "tokenizer": "offline", "on_bad_rows": "error"}


def run_all(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    def one(cmd):
        return subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env=script_env())

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(commands, pool.map(one, commands.values())))


def check_one_line_error(name: str, proc: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, f"{name}: traceback\n{proc.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {lines}"
    for needle in needles:
        assert needle in lines[0], f"{name}: {needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "folder").mkdir()
    (d / "folder" / "metrics.json").mkdir()  # a folder where the probe expects a file
    (d / "a_file").write_text("not a folder\n")
    (d / "not_json").write_text("{settings: nope\n")
    (d / "no_tokens").mkdir()
    good = write_conversations(d / "good.jsonl", 30)
    settings = d / "settings.json"
    settings.write_text(json.dumps(tiny_settings()))
    for stage in ("probe", "sweep"):  # each stage reads its own slice of the settings
        (d / f"settings_{stage}.json").write_text(json.dumps(tiny_settings(stage=stage)))
    return d, good, settings


def test_missing_or_unreadable_inputs(inputs, tmp_path):
    d, good, settings = inputs
    out = tmp_path / "out"
    missing = d / "does_not_exist"
    probe_settings = d / "settings_probe.json"
    data = json.dumps(DATA)
    cases = {  # name -> (argv, text the error must contain)
        "download: missing jsonl": (["scripts/download.py", "--source", f"jsonl:{missing}", "--out", f"{out}/a.jsonl"],
                                    str(missing)),
        "download: folder as jsonl": (["scripts/download.py", "--source", f"jsonl:{d / 'folder'}", "--out",
                                       f"{out}/b.jsonl"], "folder"),
        "tokenize: missing raw": (["scripts/tokenize_dataset.py", "--raw", str(missing), "--data", data,
                                   "--out-dir", f"{out}/c"], str(missing)),
        "tokenize: folder as raw": (["scripts/tokenize_dataset.py", "--raw", str(d / "folder"), "--data", data,
                                     "--out-dir", f"{out}/d"], "folder"),
        "tokenize: bad --data": (["scripts/tokenize_dataset.py", "--raw", str(good), "--data", "{max_len",
                                  "--out-dir", f"{out}/e"], "--data"),
        "train: missing tokens": (["scripts/train.py", "--settings", f"@{settings}", "--tokens-dir", str(missing),
                                   "--out-dir", f"{out}/f"], str(missing)),
        "train: file as tokens folder": (["scripts/train.py", "--settings", f"@{settings}", "--tokens-dir",
                                          str(d / "a_file"), "--out-dir", f"{out}/g"], "a_file"),
        "train: tokens folder without train.npy": (["scripts/train.py", "--settings", f"@{settings}", "--tokens-dir",
                                                    str(d / "no_tokens"), "--out-dir", f"{out}/h"], "train.npy"),
        "train: missing settings file": (["scripts/train.py", "--settings", f"@{missing}", "--tokens-dir",
                                          str(d / "no_tokens"), "--out-dir", f"{out}/i"], str(missing)),
        "train: settings lacking keys": (["scripts/train.py", "--settings", '{"name": "x"}', "--tokens-dir",
                                          str(d / "no_tokens"), "--out-dir", f"{out}/j"], "settings"),
        "probe: missing train folder": (["scripts/probe.py", "--settings", f"@{probe_settings}", "--train-dir", str(missing),
                                         "--tokens-dir", str(d / "no_tokens"), "--out", f"{out}/k.json"], str(missing)),
        "probe: unreadable metrics.json": (["scripts/probe.py", "--settings", f"@{probe_settings}", "--train-dir",
                                            str(d / "folder"), "--tokens-dir", str(d / "no_tokens"),
                                            "--out", f"{out}/l.json"], "metrics.json"),
        "sweep: missing settings file": (["scripts/sweep.py", "--settings", f"@{missing}", "--out", f"{out}/m.json"],
                                         str(missing)),
        "sweep: settings not JSON": (["scripts/sweep.py", "--settings", f"@{d / 'not_json'}", "--out",
                                      f"{out}/n.json"], "JSON"),
        "sweep: settings lacking keys": (["scripts/sweep.py", "--settings", '{"name": "x"}', "--out",
                                         f"{out}/r.json"], "lacks key"),
        "probe: settings not an object": (["scripts/probe.py", "--settings", "[1, 2]", "--train-dir", str(d / "folder"),
                                           "--tokens-dir", str(d / "no_tokens"), "--out", f"{out}/s.json"],
                                          "JSON object"),
        "sweep: folder as settings": (["scripts/sweep.py", "--settings", f"@{d / 'folder'}", "--out",
                                       f"{out}/o.json"], "folder"),
        "report: missing train file": (["scripts/report.py", "--train", str(missing), "--stats", str(good),
                                        "--config", "{}", "--out-dir", f"{out}/p"], str(missing)),
        "report: folder as stats": (["scripts/report.py", "--train", str(good), "--stats", str(d / "folder"),
                                     "--config", "{}", "--out-dir", f"{out}/q"], "folder"),
    }
    procs = run_all({name: argv for name, (argv, _) in cases.items()})
    for name, (_, needle) in cases.items():
        check_one_line_error(name, procs[name], needle)
    assert not out.exists() or not any(out.rglob("*")), f"written despite bad input: {list(out.rglob('*'))}"
    print(f"\nCLI inputs tried: {len(cases)}, one-line errors: {len(cases)}")


BAD_FILES = {  # name -> (file content, text the error must contain)
    **{f"row: {problem}": (None, problem) for _, problem in BAD_ROWS},
    "empty file": (b"", "empty"),
    "only blank lines": (b"\n \n\t\n", "empty"),
    "file not UTF-8 (latin-1)": ('{"messages": [{"role": "user", "content": "déjà vu"}]}\n'.encode("latin-1"),
                                 "UTF-8"),
    "binary file": (bytes(range(256)) * 4, "line 1"),
}


def test_bad_dataset_files_through_the_tokenize_cli(tmp_path):
    good = json.dumps(conversation(1)).encode()
    files, commands = {}, {}
    for i, (name, (content, _)) in enumerate(BAD_FILES.items()):
        if content is None:  # a bad row on line 3 of an otherwise good file (line 2 blank: ignored)
            content = good + b"\n\n" + BAD_ROWS[[p for _, p in BAD_ROWS].index(name[5:])][0] + good + b"\n"
        path = tmp_path / f"bad{i}.jsonl"
        path.write_bytes(content)
        files[name] = path
        commands[name] = ["scripts/tokenize_dataset.py", "--raw", str(path), "--data", json.dumps(DATA),
                          "--out-dir", str(tmp_path / f"out{i}")]
    # every row bad, with skip: nothing left is an error too
    allbad = tmp_path / "allbad.jsonl"
    allbad.write_bytes(b"\n".join(bad.rstrip(b"\n") for bad, _ in BAD_ROWS) + b"\n")
    commands["all rows bad, skip"] = ["scripts/tokenize_dataset.py", "--raw", str(allbad), "--data",
                                      json.dumps({**DATA, "on_bad_rows": "skip"}), "--out-dir", str(tmp_path / "outx")]
    # skip: bad rows are counted in the stats
    mixed = write_conversations(tmp_path / "mixed.jsonl", 40, [bad.rstrip(b"\n") for bad, _ in BAD_ROWS])
    commands["skip"] = ["scripts/tokenize_dataset.py", "--raw", str(mixed), "--data",
                        json.dumps({**DATA, "on_bad_rows": "skip"}), "--out-dir", str(tmp_path / "outs")]
    procs = run_all(commands)
    for i, (name, (content, problem)) in enumerate(BAD_FILES.items()):
        needles = [str(files[name]), problem] + (["line 3"] if name.startswith("row:") else [])
        check_one_line_error(name, procs[name], *needles)
        assert not (tmp_path / f"out{i}").exists(), f"{name}: output written"
    check_one_line_error("all rows bad, skip", procs["all rows bad, skip"], "no valid conversations")
    assert procs["skip"].returncode == 0, procs["skip"].stderr
    stats = json.loads((tmp_path / "outs" / "stats.json").read_text())
    assert stats["skipped_rows"] == len(BAD_ROWS) and stats["conversations"] == 40
    assert {b["line"] for b in stats["bad_rows"]} == set(range(41, 41 + len(BAD_ROWS)))
    print(f"\ndataset inputs tried: {len(BAD_FILES) + 2}, clear errors: {len(BAD_FILES) + 1}, skipped and counted: 1")


POOL_THREADS = """
import os, runpy, sys
sys.argv = ["tokenize_dataset.py", *sys.argv[1:]]
try:
    runpy.run_path("scripts/tokenize_dataset.py", run_name="__main__")
except SystemExit as end:
    assert not end.code, end.code
print("threads", len(os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_tokenize_threads_bound_the_tokenizers_pool(tmp_path):
    """``--threads N`` (the tokenize rule passes its Snakemake threads) is the size of the tokenizer's
    pool: one more thread in the process per thread asked for, so the encoding cannot take the cores
    Snakemake gave a GPU job beside it."""
    raw = write_conversations(tmp_path / "raw.jsonl", 300)
    counts = {}
    for n in (1, 2):
        proc = subprocess.run([sys.executable, "-c", POOL_THREADS, "--raw", str(raw), "--data", json.dumps(DATA),
                               "--threads", str(n), "--out-dir", str(tmp_path / f"out{n}")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env={k: v for k, v in script_env().items() if k != "RAYON_NUM_THREADS"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        counts[n] = int(proc.stdout.strip().splitlines()[-1].split()[1])
    assert counts[2] - counts[1] == 1, counts
    bad = subprocess.run([sys.executable, "scripts/tokenize_dataset.py", "--raw", str(raw), "--data", json.dumps(DATA),
                          "--threads", "0", "--out-dir", str(tmp_path / "out0")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=script_env())
    check_one_line_error("threads 0", bad, "--threads='0'", "at least 1")
    assert not (tmp_path / "out0").exists()
