#!/usr/bin/env python3
"""Checks a Helm chart without a helm binary (none can be had here): what can be known from the files alone.

For every file under templates/ (none skipped; _helpers.tpl holds only defines):
  - every template action {{ ... }} is one this checker understands: a control word (if, else, end, with, range,
    define), a comment, or a pipeline of known functions over .Values / .Chart / .Release / $vars / literals. Anything
    else fails, naming the file and line, so that a new construct is looked at rather than passed over;
  - every .Values.a.b path names a key that values.yaml has (the whole path, any depth), every .Chart.X a field of
    Chart.yaml, every .Release.X a release built-in, every include a define of the chart;
  - after stripping the actions (control lines removed, each value action replaced by a placeholder scalar) the file
    parses as YAML (every document), with the kind and apiVersion set.
Not checked (needs helm): the rendered output for real values (whitespace chomping, indentation of included
blocks, types after templating), required() failures, and the API schemas.

Usage: check_helm_chart.py CHART_DIR   (prints one line per problem; exit 1 if any)."""
import pathlib
import re
import sys

import yaml

CONTROL = {"if", "else", "end", "with", "range", "define"}
FUNCTIONS = {"include", "nindent", "indent", "toYaml", "quote", "b64enc", "required", "sha256sum", "print", "printf",
             "trunc", "trimSuffix", "ternary", "ne", "eq", "add", "default", "not", "and", "or"}
RELEASE = {"Name", "Namespace", "Service", "IsInstall", "IsUpgrade", "Revision"}
CHART_FIELDS = {"Name": "name", "Version": "version", "AppVersion": "appVersion", "Description": "description"}
PLACEHOLDER = "x"

ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\$?[.\w$]+|[()|:=,]|\S')


def _lookup(tree, path):
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_action(text, values, chart, defines, where, problems, templates_dir=pathlib.Path("."), used=None):
    """Checks one action's text; returns its kind: "comment", "control" or "value"."""
    used = set() if used is None else used
    if text.startswith("/*"):
        if not text.endswith("*/"):
            problems.append(f"{where}: unterminated comment")
        return "comment"
    tokens = TOKEN.findall(text)
    if not tokens:
        problems.append(f"{where}: empty action")
        return "value"
    kind = "control" if tokens[0] in CONTROL else "value"
    body = tokens[1:] if kind == "control" else tokens
    if tokens[0] == "define":
        if not (len(tokens) == 2 and tokens[1].startswith('"')):
            problems.append(f"{where}: define takes one quoted name")
        return kind
    if tokens[0] in ("else", "end") and len(tokens) > 1 and not (tokens[0] == "else" and tokens[1] in ("if", "with")):
        problems.append(f"{where}: unexpected words after {tokens[0]}: {text}")
    for i, t in enumerate(body):
        if t.startswith(('"', "`")) or re.fullmatch(r"-?\d+(\.\d+)?", t) or t in "()|:=,":
            continue
        if t in ("true", "false", "nil", ".", "$", "if", "with"):
            continue
        if t.startswith(".Values.") or t.startswith("$.Values."):
            path = t.split(".Values.", 1)[1].split(".")
            used.add(tuple(path))
            if not _lookup(values, path):
                problems.append(f"{where}: .Values.{'.'.join(path)} is not in values.yaml")
        elif t.startswith(".Chart.") or t.startswith("$.Chart."):
            field = t.split(".Chart.", 1)[1]
            if field not in CHART_FIELDS or CHART_FIELDS[field] not in chart:
                problems.append(f"{where}: .Chart.{field} is not a field of Chart.yaml")
        elif t.startswith(".Release.") or t.startswith("$.Release."):
            if t.split(".Release.", 1)[1] not in RELEASE:
                problems.append(f"{where}: {t} is not a release built-in")
        elif t in ("$.Template.BasePath", ".Template.BasePath", ".Template.Name"):
            continue
        elif t.startswith("$"):
            if not re.fullmatch(r"\$\w+", t):
                problems.append(f"{where}: variable {t} not understood")
        elif t.startswith("."):
            # A field of the dot that with/range rebinds: its value comes from values.yaml already checked.
            if t == ".Values":
                problems.append(f"{where}: bare .Values (pass a path)")
        elif t in FUNCTIONS:
            if t == "include":
                name = body[i + 1] if i + 1 < len(body) else ""
                computed = body[i + 1:i + 5]
                if computed[:3] == ["(", "print", "$.Template.BasePath"] and len(computed) == 4:
                    # include (print $.Template.BasePath "/file.yaml") .: another template file of the chart
                    if not (templates_dir / computed[3].strip('"').lstrip("/")).is_file():
                        problems.append(f"{where}: include of a missing template file {computed[3]}")
                elif not name.startswith('"') or name.strip('"') not in defines:
                    problems.append(f"{where}: include of an undefined template {name}")
        else:
            problems.append(f"{where}: '{t}' is not a function or construct this checker knows (in: {text})")
    return kind


def strip_actions(source, values, chart, defines, name, problems, templates_dir, used,
                  outside_define_is_error=False):
    """The file with its actions stripped: a line holding only control actions or comments (or an action that emits
    a block, such as include/toYaml piped to nindent) is dropped; other actions become a placeholder scalar. Blocks
    (if/with/range/define ... end) must balance; outside_define_is_error: text is allowed only inside a define."""
    out = []
    line_no = 1
    # Comments may span lines: blank them out first, keeping the line count.
    def blank(m):
        check_action(m.group(1), values, chart, defines, f"{name}:{source.count(chr(10), 0, m.start()) + 1}",
                     problems, templates_dir, used)
        return "\n" * m.group(0).count("\n")
    source = re.sub(r"\{\{-?\s*(/\*.*?\*/)\s*-?\}\}", blank, source, flags=re.S)
    depth = 0  # open if/with/range/define blocks
    for line_no, line in enumerate(source.split("\n"), start=1):
        where = f"{name}:{line_no}"
        if "{{" in line and not ACTION.search(line):
            problems.append(f"{where}: an action that does not close on its line")
            continue
        kinds = []
        for m in ACTION.finditer(line):
            kinds.append(check_action(m.group(1), values, chart, defines, where, problems, templates_dir, used))
            word = (m.group(1).split() or [""])[0]
            if word in ("if", "with", "range", "define"):
                depth += 1
            elif word == "end":
                depth -= 1
                if depth < 0:
                    problems.append(f"{where}: end without an open block")
                    depth = 0
            elif word == "else" and depth == 0:
                problems.append(f"{where}: else outside a block")
        rest = ACTION.sub("", line).strip()
        if outside_define_is_error and depth == 0 and rest and not kinds:
            problems.append(f"{where}: text outside a define")
        if kinds and not rest:
            continue  # control lines and block-emitting lines (nindent) leave nothing behind
        out.append(ACTION.sub(PLACEHOLDER, line))
    if depth:
        problems.append(f"{name}: {depth} block(s) not closed by end")
    return "\n".join(out)


def check_chart(chart_dir):
    """Problems found in the chart (empty list: none) and the number of template files checked."""
    chart_dir = pathlib.Path(chart_dir)
    problems = []
    values = yaml.safe_load((chart_dir / "values.yaml").read_text()) or {}
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text()) or {}
    files = sorted(p for p in (chart_dir / "templates").rglob("*") if p.is_file())
    defines = set()
    for p in files:
        defines |= set(re.findall(r'\{\{-?\s*define\s+"([^"]+)"', p.read_text()))
    checked = 0
    used = set()  # .Values paths the templates read
    for p in files:
        name = str(p.relative_to(chart_dir))
        text = p.read_text()
        if p.suffix == ".tpl":
            # Helpers: only defines (and comments) at the top level; their bodies are checked as actions.
            strip_actions(text, values, chart, defines, name, problems, chart_dir / "templates", used,
                          outside_define_is_error=True)
            checked += 1
            continue
        if p.suffix not in (".yaml", ".yml"):
            problems.append(f"{name}: not a .yaml or .tpl file (the checker does not know it)")
            continue
        stripped = strip_actions(text, values, chart, defines, name, problems, chart_dir / "templates", used)
        try:
            docs = [d for d in yaml.safe_load_all(stripped) if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{name}: not YAML once the actions are stripped: {e}")
            continue
        if not docs:
            problems.append(f"{name}: no YAML document")
        for d in docs:
            if not isinstance(d, dict) or not d.get("kind") or not d.get("apiVersion"):
                problems.append(f"{name}: a document without kind and apiVersion")
        checked += 1
    # A value no template reads is a knob that does nothing: every leaf of values.yaml must be read, itself or
    # through a parent the templates read whole (toYaml .Values.resources, range .Values.config).
    def leaves(node, path=()):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                yield from leaves(v, path + (str(k),))
        else:
            yield path
    for leaf in leaves(values):
        if not any(leaf[:len(u)] == u for u in used):
            problems.append(f"values.yaml: {'.'.join(leaf)} is read by no template")
    return problems, checked


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n\n")[-1])
        return 2
    problems, checked = check_chart(argv[1])
    for p in problems:
        print(p)
    print(f"{checked} template files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
