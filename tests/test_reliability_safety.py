"""Static checks over the tracked code: no eval/exec, no pickle, safe YAML, weights-only
loads, autoescaped Jinja, and shell commands that quote every value that could come from
the config."""
from __future__ import annotations

import ast
import re
import subprocess

import yaml
from reliability_utils import ROOT


def tracked(*suffixes: str) -> list:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in files if f.endswith(suffixes) and (ROOT / f).is_file()]


def dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def truthy_constant(node) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value)


def python_problems(path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                if n and n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"):
                    out.append(f"{where}: imports {n}")
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        if name in ("eval", "exec", "compile"):
            out.append(f"{where}: {name}()")
        elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            loader = dotted(kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else ast.Constant(None)))
            if name.startswith("yaml.load") and loader.split(".")[-1] in ("SafeLoader", "CSafeLoader"):
                continue
            out.append(f"{where}: {name} (use yaml.safe_load)")
        elif name == "torch.load" or name.endswith(".torch.load"):
            if not truthy_constant(kw(node, "weights_only")):
                out.append(f"{where}: torch.load without weights_only=True")
        elif name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy"):
            if kw(node, "allow_pickle") is not None and not (isinstance(kw(node, "allow_pickle"), ast.Constant)
                                                              and kw(node, "allow_pickle").value is False):
                out.append(f"{where}: numpy load with allow_pickle")
        elif name in ("jinja2.Environment", "Environment", "jinja2.Template", "Template"):
            if name.endswith("Template"):
                out.append(f"{where}: jinja2.Template (no autoescape); use an Environment with autoescape")
            elif kw(node, "autoescape") is None or (isinstance(kw(node, "autoescape"), ast.Constant)
                                                    and not kw(node, "autoescape").value):
                out.append(f"{where}: jinja2.Environment without autoescape")
        elif name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
            out.append(f"{where}: {name} (a shell string)")
        elif name.startswith("subprocess.") and truthy_constant(kw(node, "shell")):
            out.append(f"{where}: {name}(shell=True)")
    return out


def test_python_code_has_no_unsafe_calls():
    files = tracked(".py")
    assert len(files) > 20
    problems = [p for f in files for p in python_problems(f)]
    assert problems == [], "\n".join(problems)


def test_snakemake_code_has_no_eval_exec_or_pickle():
    files = tracked(".smk") + [ROOT / "Snakefile"]
    pattern = re.compile(r"(?<![\w.])(eval|exec|compile)\s*\(|\bpickle\b|yaml\.(unsafe_|full_)?load\(|torch\.load\(")
    hits = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if not line.lstrip().startswith("#") and pattern.search(line)]
    assert hits == [], "\n".join(hits)
    assert not any(re.search(r"^\s*(run|script):", f.read_text(), re.M) for f in files), \
        "run:/script: blocks would need the same review as shell:"


def shell_commands(text: str) -> list[str]:
    """The string literals of every ``shell:`` directive (implicitly concatenated lines)."""
    out = []
    for m in re.finditer(r"^(\s*)shell:\s*\n((?:\1\s+.*\n?)+)", text, re.M):
        out.append("".join(re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))))
    return out


# Placeholders that may stay unquoted, each with the reason it is shell-safe (checked below).
UNQUOTED_OK = {
    "params.seed": "config seed: the schema makes it an integer",
    "wildcards.variant": "constrained to the config's variant names; the schema allows [A-Za-z0-9_-] only",
}


def test_every_shell_value_is_quoted():
    smk = sorted(tracked(".smk"))
    commands = [(f, c) for f in smk for c in shell_commands(f.read_text())]
    assert len(commands) >= 6, commands  # download, tokenize, train, probe, sweep, report
    bad = []
    for f, cmd in commands:
        for field in re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", cmd):
            name, _, spec = field.partition(":")
            if spec != "q" and name not in UNQUOTED_OK:
                bad.append(f"{f.relative_to(ROOT)}: {{{field}}} in {cmd!r}")
    assert bad == [], "unquoted values in shell commands:\n" + "\n".join(bad)

    # the reasons in UNQUOTED_OK still hold
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert schema["properties"]["seed"]["type"] == "integer"
    assert re.search(r"seed=config\[\"seed\"\]", (ROOT / "rules" / "data.smk").read_text())
    assert schema["properties"]["variants"]["propertyNames"]["pattern"] == "^[A-Za-z0-9_-]+$"
    assert re.search(r'wildcard_constraints:\s*\n\s*variant="\|"\.join\(VARIANTS\)', (ROOT / "Snakefile").read_text()
                     + (ROOT / "rules" / "common.smk").read_text())
