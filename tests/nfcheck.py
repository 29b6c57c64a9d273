"""Static checks of the Nextflow layer, without the Nextflow engine.

Nextflow and a container engine are not available where the tests run, so this
module reads the pipeline the way Nextflow would, as far as our deliberately
simple DSL2 allows:

* syntax: every ``.nf`` and ``.config`` file goes through the ``reftrace`` parser
  (a Nextflow grammar); :func:`parse_nf` / :func:`parse_config` raise on errors;
* structure: includes resolve to files that define the included names, and every
  process or workflow a workflow calls is defined or included (:func:`check_includes`,
  :func:`check_calls`) - reftrace parses includes but does not check them;
* processes: inputs, outputs (patterns, emit names, eval commands), the ``script:``
  and ``stub:`` templates (:func:`processes`);
* a mini task runner: :func:`render` fills a script template the way Nextflow does
  (``${meta.id}``, ``${task.cpus}``, input names, ``def`` variables, ext.args),
  :func:`stage` links input files under their ``stageAs`` names and
  :func:`collect_outputs` globs the declared output patterns, so a test can run a
  module's real command on real data and see whether it writes what the process
  declares;
* config: the ``params`` blocks, ``ext.args`` lists and profile names.

The expression evaluator understands only what our modules use (names, fields,
indexing, ``?:``, ``? :``, ``==``, ``!``, string literals and GStrings); anything
else raises :class:`Unsupported`, which keeps the modules simple or makes a test
supply the value explicitly.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import posixpath
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Functions the nf-schema plugin provides (plugin includes cannot be resolved to a file).
PLUGIN_FUNCTIONS = {
    "nf-schema": {"validateParameters", "paramsSummaryLog", "paramsSummaryMap", "samplesheetToList", "paramsHelp"},
}


class NfError(Exception):
    """A problem in the pipeline source (parse error, bad include, unknown call)."""


class Unsupported(NfError):
    """An expression outside the small subset :func:`evaluate` understands."""


# -- parsing with reftrace --------------------------------------------------------------

def parse_nf(path: str | Path):
    """reftrace Module of a .nf file; raises NfError on a syntax error."""
    st = os.stat(path)
    return _parse_nf(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=None)
def _parse_nf(path: str, _mtime: int, _size: int):
    # cached per file version: parsing is the slow part and each file is read by several checks
    import reftrace

    mod = reftrace.Module.from_file(path)
    if isinstance(mod, reftrace.ParseError):
        raise NfError(f"{path}: {mod.error}")
    return mod


def parse_config(path: str | Path):
    import reftrace

    res = reftrace.ConfigFile.from_file(str(path))
    if res.error is not None:
        raise NfError(f"{path}: {res.error.error}")
    return res.config_file


# -- masking strings and comments (so braces/parentheses can be matched) -----------------

def mask(text: str, keep_comment_marks: bool = False) -> str:
    """Same length as text; comments and string contents become spaces (newlines kept).

    Quotes stay in place, so a masked region can be mapped back to the original;
    with ``keep_comment_marks`` a line comment keeps its ``//``.
    """
    out = list(text)
    i, n = 0, len(text)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i + 2 if keep_comment_marks else i, j)
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif text.startswith('"""', i) or text.startswith("'''", i):
            q = text[i:i + 3]
            j = i + 3
            while j < n and not text.startswith(q, j):
                j += 2 if text[j] == "\\" else 1
            blank(i + 3, min(j, n))
            i = j + 3
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        else:
            i += 1
    return "".join(out)


def match_close(masked: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (in masked text)."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    open_c = masked[start]
    close_c = pairs[open_c]
    depth = 0
    for k in range(start, len(masked)):
        if masked[k] == open_c:
            depth += 1
        elif masked[k] == close_c:
            depth -= 1
            if depth == 0:
                return k
    raise NfError(f"unbalanced '{open_c}' at offset {start}")


def blocks(text: str, keyword: str) -> list[tuple[str, str]]:
    """(name, body) of every top-level ``keyword NAME { ... }`` (workflow name may be empty)."""
    masked = mask(text)
    found = []
    for m in re.finditer(rf"(?m)^\s*{keyword}\s*([A-Za-z_][A-Za-z0-9_]*)?\s*\{{", masked):
        brace = m.end() - 1
        end = match_close(masked, brace)
        found.append((m.group(1) or "", text[brace + 1:end]))
    return found


def functions(text: str) -> set[str]:
    return set(re.findall(r"(?m)^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", mask(text)))


# -- processes ------------------------------------------------------------------------------

SECTIONS = ("input", "output", "when", "script", "shell", "exec", "stub")


@dataclasses.dataclass
class Output:
    decl: str
    patterns: list[str]          # GString templates of path(...) outputs
    emit: str | None
    topic: str | None
    optional: bool
    evals: list[str]             # commands of eval(...) outputs (all literal alternatives)


@dataclasses.dataclass
class Input:
    decl: str
    items: list[tuple[str, str, dict]]   # (kind, name, options), e.g. ("path", "reads", {"stageAs": "r1/*"})


@dataclasses.dataclass
class Template:
    defs: dict[str, str]         # name -> Groovy expression
    body: str                    # the triple-quoted command string (raw, unescaped)


@dataclasses.dataclass
class Process:
    name: str
    path: Path
    directives: str
    inputs: list[Input]
    outputs: list[Output]
    when: str
    script: Template
    stub: Template | None

    def emits(self) -> set[str]:
        return {o.emit for o in self.outputs if o.emit}

    def labels(self) -> list[str]:
        return re.findall(r"(?m)^\s*label\s+['\"]([^'\"]+)['\"]", self.directives)


def _sections(body: str) -> dict[str, str]:
    masked = mask(body)
    marks = [(m.group(1), m.start(), m.end())
             for m in re.finditer(rf"(?m)^[ \t]*({'|'.join(SECTIONS)}):[ \t]*$", masked)]
    out = {"directives": body[:marks[0][1]] if marks else body}
    for k, (name, _s, e) in enumerate(marks):
        end = marks[k + 1][1] if k + 1 < len(marks) else len(body)
        out[name] = body[e:end]
    return out


def _top_level(text: str, sep: str, opening: str, closing: str) -> list[str]:
    """``text`` cut at every ``sep`` outside brackets, strings and comments (the pieces, in order)."""
    masked = mask(text)
    pieces, depth, begin = [], 0, 0
    for k, ch in enumerate(masked):
        if ch in opening:
            depth += 1
        elif ch in closing:
            depth -= 1
        elif ch == sep and depth == 0:
            pieces.append(text[begin:k])
            begin = k + 1
    pieces.append(text[begin:])
    return [piece for piece in pieces if mask(piece).strip()]


def _declarations(section: str) -> list[str]:
    """One string per declaration line (parentheses may span lines); comments dropped."""
    return [_strip_comment(piece).strip() for piece in _top_level(section, "\n", "([", ")]")]


def _strip_comment(piece: str) -> str:
    k = mask(piece, keep_comment_marks=True).find("//")
    return piece if k < 0 else piece[:k]


def _calls(decl: str, fname: str) -> list[str]:
    """Argument strings of every ``fname(...)`` in a declaration."""
    masked = mask(decl)
    out = []
    for m in re.finditer(rf"\b{fname}\s*\(", masked):
        open_at = m.end() - 1
        close = match_close(masked, open_at)
        out.append(decl[open_at + 1:close])
    return out


_LITERAL = re.compile(r"""'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)\"""")


def _literals(arg: str) -> list[str]:
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in _LITERAL.finditer(arg)]


def _parse_options(text: str) -> dict:
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
            for m in re.finditer(r"(\w+)\s*:\s*(?:'([^']*)'|\"([^\"]*)\")", text)}


def _template(section: str) -> Template:
    masked = mask(section)
    q = masked.find('"""')
    if q < 0:
        raise NfError("script/stub without a triple-quoted command string")
    end = masked.find('"""', q + 3)
    head = section[:q]
    defs = {}
    for line in head.splitlines():
        m = re.match(r"\s*def\s+(\w+)\s*=\s*(.+?)\s*$", _strip_comment(line))
        if m:
            defs[m.group(1)] = m.group(2)
    return Template(defs=defs, body=section[q + 3:end])


def processes(path: str | Path) -> list[Process]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    found = []
    for name, body in blocks(text, "process"):
        sec = _sections(body)
        inputs = []
        for decl in _declarations(sec.get("input", "")):
            items = []
            for kind in ("val", "path", "env", "stdin", "file", "each"):
                for arg in _calls(decl, kind):
                    first = arg.split(",")[0].strip()
                    items.append((kind, first, _parse_options(arg[len(arg.split(",")[0]):])))
            inputs.append(Input(decl=decl, items=sorted(items, key=lambda it: decl.find(f"{it[0]}({it[1]}"))))
        outputs = []
        for decl in _declarations(sec.get("output", "")):
            patterns = [(_literals(a) or [""])[0] for a in _calls(decl, "path")]
            evals = [lit for a in _calls(decl, "eval") for lit in _literals(a) if " " in lit or "|" in lit]
            emit = re.search(r"emit:\s*(\w+)", decl)
            topic = re.search(r"topic:\s*(\w+)", decl)
            outputs.append(Output(decl=decl, patterns=patterns, emit=emit and emit.group(1),
                                  topic=topic and topic.group(1), optional=bool(re.search(r"optional:\s*true", decl)),
                                  evals=evals))
        found.append(Process(name=name, path=path, directives=sec["directives"], inputs=inputs, outputs=outputs,
                             when=sec.get("when", "").strip(), script=_template(sec["script"]),
                             stub=_template(sec["stub"]) if "stub" in sec else None))
    return found


# -- includes and calls ------------------------------------------------------------------

def nf_files(root: Path = REPO) -> list[Path]:
    return sorted(p for p in [root / "main.nf", *root.glob("workflows/**/*.nf"), *root.glob("subworkflows/**/*.nf"),
                              *root.glob("modules/**/*.nf")] if p.is_file())


def resolve_include(source: Path, target: str) -> Path:
    base = (source.parent / target)
    for cand in (base if target.endswith(".nf") else base.with_name(base.name + ".nf"), base / "main.nf"):
        if cand.is_file():
            return cand
    raise NfError(f"{source}: include from '{target}' does not resolve to a file "
                  f"(tried {base}.nf and {base}/main.nf)")


def defined_names(path: Path) -> set[str]:
    mod = parse_nf(path)
    text = path.read_text(encoding="utf-8")
    return {p.name for p in mod.processes} | {w.name for w in mod.workflows if w.name} | functions(text)


def plugin_ids(config: Path) -> set[str]:
    text = config.read_text(encoding="utf-8")
    return {pid.split("@")[0] for pid in re.findall(r"\bid\s+['\"]([^'\"]+)['\"]", text)}


def aliases(paths) -> dict[str, str]:
    """{alias: process name} of every ``include { X as Y }`` in the given files."""
    return {item.alias: item.name for p in paths for inc in parse_nf(p).includes for item in inc.items if item.alias}


def check_includes(path: Path, plugins: set[str]) -> dict[str, str]:
    """{local name: defining file or plugin} for every include of ``path``; raises NfError."""
    names = {}
    for inc in parse_nf(path).includes:
        target = inc.from_module
        if target.startswith("plugin/"):
            plugin = target.split("/", 1)[1]
            if plugin not in plugins:
                raise NfError(f"{path}:{inc.line}: plugin '{plugin}' is not declared in nextflow.config plugins{{}}")
            for item in inc.items:
                if item.name not in PLUGIN_FUNCTIONS.get(plugin, set()):
                    raise NfError(f"{path}:{inc.line}: plugin '{plugin}' provides no '{item.name}'")
                names[item.alias or item.name] = target
            continue
        resolved = resolve_include(path, target)
        defined = defined_names(resolved)
        for item in inc.items:
            if item.name not in defined:
                raise NfError(f"{path}:{inc.line}: '{item.name}' is not defined in {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved}")
            names[item.alias or item.name] = str(resolved)
    return names


# Upper-case names followed by '(' or '.out' in a workflow body are process/workflow calls.
_CALL = re.compile(r"(?<![\w.])([A-Z][A-Z0-9_]*[A-Z0-9])\s*(?:\(|\.out\b)")


def check_calls(path: Path, plugins: set[str]) -> set[str]:
    """Every process/workflow called in the workflows of ``path`` is defined there or included."""
    text = path.read_text(encoding="utf-8")
    known = set(check_includes(path, plugins)) | defined_names(path)
    called = set()
    for name, body in blocks(text, "workflow"):
        for m in _CALL.finditer(mask(body)):
            called.add(m.group(1))
            if m.group(1) not in known:
                raise NfError(f"{path}: workflow '{name or '<entry>'}' calls {m.group(1)}, "
                              f"which is neither defined nor included")
    return called


def split_args(text: str) -> list[str]:
    """Top-level comma-separated pieces of an argument list (brackets, closures and strings kept whole)."""
    return [" ".join(_strip_comment(line).strip() for line in piece.splitlines()).strip()
            for piece in _top_level(text, ",", "([{", ")]}")]


def workflow_body(path: Path, name: str) -> str:
    """The body of ``workflow NAME { ... }`` in ``path`` (``''``: the entry workflow)."""
    found = dict(blocks(path.read_text(encoding="utf-8"), "workflow"))
    if name not in found:
        raise NfError(f"{path}: no workflow '{name or '<entry>'}'")
    return found[name]


def call_args(body: str, name: str) -> list[list[str]]:
    """The arguments of every call ``NAME(...)`` in a workflow body, one list per call."""
    masked = mask(body)
    calls = []
    for m in re.finditer(rf"(?<![\w.]){re.escape(name)}\s*\(", masked):
        close = match_close(masked, m.end() - 1)
        calls.append(split_args(body[m.end():close]))
    return calls


def assignments(body: str) -> dict[str, list[str]]:
    """{name: [right-hand sides]} of ``name = ...`` statements in a workflow body.

    A statement continues over lines while brackets are open or the next line starts with
    ``.`` (a method chain); whitespace in the right-hand side is collapsed to one blank.
    """
    masked = mask(body)
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"(?m)^[ \t]*(?:def[ \t]+)?([A-Za-z_]\w*)[ \t]*=(?![=~])", masked):
        k, depth = m.end(), 0
        while k < len(masked):
            ch = masked[k]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                if depth == 0:
                    break  # the end of the enclosing block (if/else)
                depth -= 1
            elif ch == "\n" and depth == 0 and not re.match(r"[ \t]*\.", masked[k + 1:]):
                break
            k += 1
        rhs = " ".join(_strip_comment(line).strip() for line in body[m.end():k].splitlines())
        out.setdefault(m.group(1), []).append(re.sub(r"\s+", " ", rhs).strip())
    return out


def check_call_arity(path: Path, plugins: set[str]) -> int:
    """Every call of an included process or workflow in ``path`` passes as many arguments as the
    callee declares (process: input declarations; workflow: ``take:`` names). Returns the number of
    calls checked; raises NfError."""
    text = path.read_text(encoding="utf-8")
    sources = check_includes(path, plugins)
    checked = 0
    for wf_name, body in blocks(text, "workflow"):
        for local, source in sources.items():
            if source.startswith("plugin/"):
                continue
            original = next((item.name for inc in parse_nf(path).includes for item in inc.items
                             if (item.alias or item.name) == local), local)
            procs = {p.name: p for p in processes(source)}
            if original in procs:
                want, what = len(procs[original].inputs), "input declarations"
            else:
                takes = {w.name: list(w.takes) for w in parse_nf(Path(source)).workflows}
                if original not in takes:
                    continue  # a function
                want, what = len(takes[original]), "take: channels"
            for args in call_args(body, local):
                if len(args) != want:
                    raise NfError(f"{path}: workflow '{wf_name or '<entry>'}' calls {local} with {len(args)} "
                                  f"argument(s) ({', '.join(args)}); it has {want} {what}")
                checked += 1
    return checked


# -- Groovy expression subset ------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>'(?:[^'\\]|\\.)*')|(?P<gstr>"(?:[^"\\]|\\.)*")"""
                    r"""|(?P<op>\?:|==|!=|&&|\|\||[?:!.\[\]()])|(?P<name>[A-Za-z_][A-Za-z0-9_]*))""")


def _tokens(expr: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot read '{expr[pos:]}' in expression '{expr}'")
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return toks


class _Parser:
    def __init__(self, expr: str, ctx: dict):
        self.expr, self.toks, self.i, self.ctx = expr, _tokens(expr), 0, ctx

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, value=None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise Unsupported(f"expected '{value}' in '{self.expr}'")
        self.i += 1
        return tok

    def parse(self):
        value = self.ternary()
        if self.i != len(self.toks):
            raise Unsupported(f"unsupported expression '{self.expr}'")
        return value

    def ternary(self):
        cond = self.logic()
        if self.peek()[1] == "?:":
            self.take()
            other = self.ternary()
            return cond if truthy(cond) else other
        if self.peek()[1] == "?":
            self.take()
            a = self.ternary()
            self.take(":")
            b = self.ternary()
            return a if truthy(cond) else b
        return cond

    def logic(self):
        left = self.compare()
        while self.peek()[1] in ("&&", "||"):
            op = self.take()[1]
            right = self.compare()
            left = (truthy(left) and truthy(right)) if op == "&&" else (truthy(left) or truthy(right))
        return left

    def compare(self):
        left = self.unary()
        if self.peek()[1] in ("==", "!="):
            op = self.take()[1]
            right = self.unary()
            return (left == right) if op == "==" else (left != right)
        return left

    def unary(self):
        if self.peek()[1] == "!":
            self.take()
            return not truthy(self.unary())
        return self.postfix()

    def postfix(self):
        value = self.primary()
        while self.peek()[1] in (".", "["):
            if self.take()[1] == ".":
                kind, attr = self.take()
                if kind != "name" or self.peek()[1] == "(":
                    raise Unsupported(f"method calls are not supported: '{self.expr}'")
                if not isinstance(value, dict):
                    raise Unsupported(f"field '{attr}' of a non-map in '{self.expr}'")
                value = value.get(attr)  # Groovy: a missing map key is null
            else:
                index = self.ternary()
                self.take("]")
                value = value[index]
        return value

    def primary(self):
        kind, tok = self.take()
        if kind == "num":
            return float(tok) if "." in tok else int(tok)
        if kind == "str":
            return _unescape(tok[1:-1])
        if kind == "gstr":
            return render(tok[1:-1], self.ctx)
        if tok == "(":
            value = self.ternary()
            self.take(")")
            return value
        if kind == "name":
            if tok in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[tok]
            if tok not in self.ctx:
                raise Unsupported(f"unknown name '{tok}' in '{self.expr}'")
            return self.ctx[tok]
        raise Unsupported(f"unsupported token '{tok}' in '{self.expr}'")


def truthy(value) -> bool:
    return value not in (None, False, "", 0) and not (isinstance(value, (list, dict)) and not value)


def evaluate(expr: str, ctx: dict):
    return _Parser(expr, ctx).parse()


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _show(value) -> str:
    """Groovy's string form of a value inside a GString (lists of paths are blank separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)
    return str(value)


def render(template: str, ctx: dict) -> str:
    """Fill a Groovy GString body: ``${expr}``, ``$name(.field)*``, and the escapes ``\\$``, ``\\\\``."""
    out, i, n = [], 0, len(template)
    while i < n:
        c = template[i]
        if c == "\\" and i + 1 < n:
            out.append(template[i + 1])
            i += 2
        elif c == "$" and i + 1 < n and template[i + 1] == "{":
            j = i + 1
            depth = 0
            while j < n:
                if template[j] == "{":
                    depth += 1
                elif template[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            out.append(_show(evaluate(template[i + 2:j], ctx)))
            i = j + 1
        elif c == "$" and i + 1 < n and (template[i + 1].isalpha() or template[i + 1] == "_"):
            m = re.match(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*", template[i + 1:])
            out.append(_show(evaluate(m.group(0), ctx)))
            i += 1 + m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def render_template(tpl: Template, ctx: dict, given: dict | None = None) -> tuple[str, dict]:
    """(bash script, def values): def variables are evaluated in order unless ``given`` supplies them."""
    ctx = dict(ctx)
    given = given or {}
    values = {}
    for name, expr in tpl.defs.items():
        if name in given:
            values[name] = given[name]
        else:
            try:
                values[name] = evaluate(expr, ctx)
            except Unsupported as err:
                raise Unsupported(f"def {name} = {expr}: {err}; give its value explicitly") from None
        ctx[name] = values[name]
    return render(tpl.body, ctx), values


# -- config files ------------------------------------------------------------------------------

def block_body(text: str, name: str) -> str | None:
    """Body of the first ``name { ... }`` block (any depth)."""
    masked = mask(text)
    m = re.search(rf"(?<![\w.]){re.escape(name)}\s*\{{", masked)
    if not m:
        return None
    end = match_close(masked, m.end() - 1)
    return text[m.end():end]


def config_params(path: Path, ctx: dict | None = None) -> dict:
    """``params { name = literal }`` of a config file, literals converted to Python."""
    body = block_body(path.read_text(encoding="utf-8"), "params")
    if body is None:
        return {}
    out = {}
    ctx = {"projectDir": str(REPO), **(ctx or {}), "params": out}    # a param may use the ones above it
    for line in body.splitlines():
        line = _strip_comment(line).strip()
        if not line:
            continue
        m = re.match(r"(\w+)\s*=\s*(.+)$", line)
        if not m:
            raise NfError(f"{path}: cannot read params line '{line}'")
        out[m.group(1)] = evaluate(m.group(2), ctx)
    return out


def profiles(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    body = block_body(text, "profiles")
    masked = mask(body)
    names, depth = set(), 0
    for m in re.finditer(r"[{}]|\b(\w+)\s*\{", masked):
        if m.group(0) == "}":
            depth -= 1
        elif m.group(0) == "{":
            depth += 1
        else:
            if depth == 0:
                names.add(m.group(1))
            depth += 1
    return names


def list_elements(text: str) -> list[str]:
    """Source of each element of the first list literal ``[a, b, ...]`` in ``text`` (empty ones dropped)."""
    masked = mask(text)
    start = masked.find("[")
    if start < 0:
        return []
    end = match_close(masked, start)
    elements, depth, begin = [], 0, start + 1
    for k in range(start + 1, end + 1):
        ch = masked[k]
        if ch in "([{":
            depth += 1
        elif ch in ")]}" and k < end:
            depth -= 1
        if (ch == "," and depth == 0) or k == end:
            piece = "\n".join(_strip_comment(line) for line in text[begin:k].splitlines()).strip()
            if piece:
                elements.append(piece)
            begin = k + 1
    return elements


def with_name_blocks(config: Path):
    """(selector, body, masked body) of every ``withName: 'X' { ... }`` block of a config, in order."""
    text = config.read_text(encoding="utf-8")
    masked = mask(text)
    for m in re.finditer(r"withName\s*:\s*(['\"])[^'\"]+['\"]\s*\{", masked):
        end = match_close(masked, m.end() - 1)
        name = text[m.start(1) + 1:text.index(m.group(1), m.start(1) + 1)]
        yield name, text[m.end():end], masked[m.end():end]


def ext_args(config: Path) -> dict[str, list[str]]:
    """{process name: [Groovy expressions]} from ``withName: 'X' { ext.args = { [ ... ].join(' ') } }``.

    Each element of the list is kept as source: a GString (``"--epochs ${params.epochs}"``)
    or an expression such as ``params.cluster ? '--cluster' : '--no-cluster'``;
    :func:`render_ext_args` evaluates them.
    """
    out = {}
    for name, body, mbody in with_name_blocks(config):
        a = re.search(r"ext\.args\s*=\s*\{", mbody)
        if not a:
            continue
        close = match_close(mbody, a.end() - 1)
        closure = body[a.end():close]
        for one in name.split("|"):  # a selector may name several processes: 'A|B'
            out[one] = list_elements(closure)
    return out


def render_ext_args(expressions: list[str], ctx: dict) -> str:
    """The ext.args string Nextflow builds: every element evaluated, joined with blanks."""
    return " ".join(_show(evaluate(expr, ctx)) for expr in expressions)


# -- a mini task runner ----------------------------------------------------------------------

def stage(items: list[tuple[str, str, dict]], sources: dict[str, object], workdir: Path) -> dict:
    """Link input files into ``workdir`` under their stageAs names; returns the context values.

    ``sources`` maps each input name to a value (val) or a path / list of paths (path).
    A path input becomes a list when it is given as a list (Nextflow: several files or arity).
    """
    ctx = {}
    for kind, name, opts in items:
        value = sources[name]
        if kind != "path":
            ctx[name] = value
            continue
        files = value if isinstance(value, (list, tuple)) else [value]
        pattern = opts.get("stageAs")
        staged = []
        for k, src in enumerate(files, start=1):
            src = Path(src)
            if pattern:
                rel = re.sub(r"\?+", lambda q: str(k).zfill(len(q.group(0))), pattern)
                rel = rel.replace("*", src.name) if "*" in rel else rel
            else:
                rel = src.name
            dest = workdir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() or dest.is_symlink():
                raise NfError(f"input file name collision: {rel}")
            os.symlink(src.resolve(), dest)
            staged.append(rel)
        ctx[name] = staged if isinstance(value, (list, tuple)) else (staged[0] if staged else [])
    return ctx


def _braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    return [x for alt in m.group(1).split(",") for x in _braces(pattern[:m.start()] + alt + pattern[m.end():])]


def collect_outputs(proc: Process, workdir: Path, ctx: dict) -> dict[str, list[Path]]:
    """{emit name: files} for every path output; raises NfError when a required pattern matches nothing."""
    found = {}
    for out in proc.outputs:
        files = []
        for pat in out.patterns:
            rendered = render(pat, ctx)
            hits = sorted({Path(h) for alt in _braces(rendered) for h in glob.glob(str(workdir / alt))})
            if not hits and not out.optional:
                raise NfError(f"{proc.name}: output path('{pat}') -> '{rendered}' matched nothing in {workdir}")
            files.extend(hits)
        if out.patterns:
            found[out.emit or f"out{len(found)}"] = files
    return found


def copy_tree(dst: Path, root: Path = REPO) -> Path:
    """Copy the Nextflow sources (not data) to ``dst`` for negative tests on broken copies."""
    dst.mkdir(parents=True, exist_ok=True)
    for rel in ["main.nf", "nextflow.config", "conf", "workflows", "subworkflows", "modules"]:
        src = root / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel)
        else:
            shutil.copy2(src, dst / rel)
    return dst


def output_elements(decl: str) -> list[tuple[str, str]]:
    """The elements of one output declaration, as nf-core's meta.yml lists them: (kind, name) with
    kind val, path or eval and name the argument as written (quotes off): ``tuple val(meta),
    path('a.tsv'), emit: x`` -> [("val", "meta"), ("path", "a.tsv")]."""
    body = decl[len("tuple"):] if decl.startswith("tuple") else decl
    out = []
    for piece in _top_level(body, ",", "([", ")]"):
        piece = piece.strip()
        m = re.fullmatch(r"(val|path|eval|env|stdout)\s*\((.*)\)", piece, re.S)
        if not m:
            continue  # emit:, topic:, optional:
        arg = _top_level(m.group(2), ",", "([", ")]")[0].strip()
        if arg[:1] in "'\"" and arg[-1:] == arg[:1]:
            arg = _unescape(arg[1:-1]) if arg[0] == '"' else arg[1:-1]
        out.append((m.group(1), arg))
    return out


# -- publishDir ----------------------------------------------------------------------------------
# Nextflow's PublishDir.apply1 (modules/nextflow/.../processor/PublishDir.groovy): for every output
# file of a task, `target = taskDir.relativize(file)`; a `pattern` is a glob (FileHelper
# getPathMatcherFor("glob:...")) matched against that relative path, and a non-match is skipped;
# `saveAs` is called with the relative path's string and a null/empty result skips the file;
# the file lands at `path/target`.

@dataclasses.dataclass
class PublishRule:
    path: str                     # the closure or GString of `path:`, unevaluated
    pattern: str | None
    save_as: str | None           # the closure's source `{ name -> body }`, or None


def publish_rules(config: Path) -> dict[str, list[PublishRule]]:
    """{process name: [PublishRule]} from every ``withName: 'X' { publishDir = [ ... ] }`` (one map
    per process: a later withName block that sets publishDir again replaces it, as in Nextflow)."""
    out: dict[str, list[PublishRule]] = {}
    for name, body, mbody in with_name_blocks(config):
        p = re.search(r"publishDir\s*=\s*\[", mbody)
        if not p:
            continue
        close = match_close(mbody, p.end() - 1)
        if mbody[p.end():close].lstrip().startswith("["):
            raise Unsupported(f"{config}: {name}: a list of publishDir maps (teach publish_rules)")
        entries = {}
        for element in list_elements(body[p.end() - 1:close + 1]):
            key, _, value = element.partition(":")
            entries[key.strip()] = value.strip()
        if "path" not in entries:
            raise NfError(f"{config}: publishDir of {name} has no path")
        pattern = evaluate(entries["pattern"], {}) if "pattern" in entries else None
        for one in name.split("|"):       # a later selector's publishDir replaces an earlier one's
            out[one] = [PublishRule(entries["path"], pattern, entries.get("saveAs"))]
    return out


def glob_regex(pattern: str) -> re.Pattern:
    """A Java NIO glob as a regex: ``*`` within a path element, ``**`` across, ``?``, ``{a,b}``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            close = pattern.index("}", i)
            out.append("(?:" + "|".join(re.escape(a) for a in pattern[i + 1:close].split(",")) + ")")
            i = close + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _closure(source: str) -> tuple[str | None, str]:
    m = re.fullmatch(r"\{\s*(?:(\w+)\s*->)?\s*(.*?)\s*\}", source.strip(), re.S)
    if not m:
        raise Unsupported(f"cannot read the closure '{source}'")
    return m.group(1), m.group(2)


def save_as(source: str, target: str, ctx: dict) -> str | None:
    """Call a ``saveAs`` closure: its body may be an expression :func:`evaluate` reads, or
    ``name.replaceFirst('regex', 'text')``; anything else is Unsupported (teach this function)."""
    arg, body = _closure(source)
    m = re.fullmatch(r"(\w+)\.replaceFirst\(\s*('(?:[^'\\]|\\.)*')\s*,\s*('(?:[^'\\]|\\.)*')\s*\)", body)
    if m and m.group(1) == arg:
        return re.sub(evaluate(m.group(2), {}), evaluate(m.group(3), {}).replace("\\", "\\\\"), target, count=1)
    value = evaluate(body, {**ctx, **({arg: target} if arg else {})})
    return str(value) if truthy(value) else None


def publish(rules: list[PublishRule], files, task_dir: Path, ctx: dict) -> list[tuple[Path, str]]:
    """(output file, where it is published: a posix path under ``params.outdir``) for each of a
    task's output ``files`` that its publishDir publishes; a folder output is published whole."""
    outdir = str(ctx["params"]["outdir"]).rstrip("/")
    published = []
    for rule in rules:
        _, path_body = _closure(rule.path) if rule.path.lstrip().startswith("{") else (None, rule.path)
        base = str(evaluate(path_body, ctx)).rstrip("/")
        if base != outdir and not base.startswith(outdir + "/"):
            raise NfError(f"publishDir path '{base}' is outside params.outdir '{outdir}'")
        matcher = glob_regex(rule.pattern) if rule.pattern else None
        for f in files:
            target = Path(f).relative_to(task_dir).as_posix()
            if matcher and not matcher.match(target):
                continue
            if rule.save_as:
                target = save_as(rule.save_as, target, ctx)
                if not target:
                    continue
            published.append((Path(f), posixpath.normpath(posixpath.join(base[len(outdir):].lstrip("/"), target))))
    return published
