"""Mutants of an ``rtl/`` file: one small edit each, found in the file's Python AST.

A mutant is one classic mutation operator (mutmut, cosmic-ray) applied at one place, restricted
to what changes hardware when the file is Amaranth code: the elaboration-time Python (widths,
ranges, loop bounds) and the Amaranth expressions and statements it builds both count. The edit
is applied to the source text at the AST node's position, so everything else (comments, layout,
line numbers) stays identical and a report can name the place.

The operators (``OPERATORS``):

``cmp``
    a comparison flipped at its boundary: ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``.
``arith``
    ``+`` ↔ ``-``, and ``<<`` ↔ ``>>``.
``const``
    an integer constant ``n`` → ``n + 1`` and ``n - 1`` (off by one).
``logic``
    ``&`` ↔ ``|``, ``and`` ↔ ``or``, and ``^`` → ``|``.
``drop-cond``
    one operand of ``&``, ``|``, ``and``, ``or`` dropped (``a & b`` → ``a``, → ``b``).
``drop-not``
    ``~x`` → ``x`` and ``not x`` → ``x``.
``mux-swap``
    ``Mux(c, a, b)`` → ``Mux(c, b, a)``.
``drop-stmt``
    an Amaranth assignment ``m.d.<domain> += ...`` replaced by ``pass`` (line count kept).

Left alone: docstrings and every other string (f-string error messages included), ``__all__``,
``assert`` and ``raise`` statements and the condition of an ``if`` whose body only raises (the
Python-side parameter checks: a mutant there changes which configs are refused, not the
hardware), ``True``/``False``, and keyword arguments named ``name`` or ``src_loc_at``.

Each mutant has a stable id, ``file:line:col:operator:before->after``, so that reports of two
runs can be compared and a run can repeat only the previous survivors.
"""

import ast
import hashlib
import io
import tokenize
from dataclasses import dataclass, asdict


__all__ = ["Mutant", "OPERATORS", "mutants_of_source", "mutants_of_file", "apply_mutant"]


OPERATORS = ("cmp", "arith", "const", "logic", "drop-cond", "drop-not", "mux-swap", "drop-stmt")

_CMP = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
        ast.Eq: ("==", "!="), ast.NotEq: ("!=", "==")}
_BIN = {ast.Add: ("+", "-", "arith"), ast.Sub: ("-", "+", "arith"),
        ast.LShift: ("<<", ">>", "arith"), ast.RShift: (">>", "<<", "arith"),
        ast.BitAnd: ("&", "|", "logic"), ast.BitOr: ("|", "&", "logic"),
        ast.BitXor: ("^", "|", "logic")}
_BOOL = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
_SKIPPED_KEYWORDS = {"name", "src_loc_at"}


@dataclass(frozen=True)
class Mutant:
    """One edit of one file: replace characters ``[start, end)`` of the source by ``after``.

    ``line`` and ``col`` (1-based line, 0-based character column) name the place for people;
    ``start``/``end`` are offsets into the whole source text.
    """

    file: str
    line: int
    col: int
    operator: str
    before: str
    after: str
    start: int
    end: int

    @property
    def id(self):
        """``file:line:col:operator:before->after`` (texts shortened to one line of 40)."""
        return (f"{self.file}:{self.line}:{self.col}:{self.operator}:"
                f"{_short(self.before)}->{_short(self.after)}")

    def to_json(self):
        return dict(asdict(self), id=self.id)


def _short(text, limit=40):
    """One line of at most ``limit`` characters; a shortened text ends in a hash of the whole,
    so that two long edits never share an id."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    return f"{flat[:limit - 10]}...#{digest}"


def apply_mutant(source, mutant):
    """The source text with ``mutant``'s edit applied (and nothing else changed)."""
    if source[mutant.start:mutant.end] != mutant.before:
        raise ValueError(f"mutant {mutant.id} does not match the source at {mutant.start}")
    return source[:mutant.start] + mutant.after + source[mutant.end:]


class _Positions:
    """Character offsets of AST positions (the AST counts columns in UTF-8 bytes)."""

    def __init__(self, source):
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        self.tokens = [(self.offset_chars(t.start), self.offset_chars(t.end), t.string)
                       for t in tokens if t.type in (tokenize.OP, tokenize.NAME)]

    def offset_chars(self, pos):
        line, col = pos
        return self.starts[line - 1] + col

    def offset(self, line, col_bytes):
        text = self.lines[line - 1].encode()[:col_bytes].decode()
        return self.starts[line - 1] + len(text)

    def span(self, node):
        return (self.offset(node.lineno, node.col_offset),
                self.offset(node.end_lineno, node.end_col_offset))

    def token_between(self, left, right, text):
        """The span of the token ``text`` between the end of ``left`` and the start of
        ``right`` (the operator of a binary expression)."""
        lo, hi = self.span(left)[1], self.span(right)[0]
        for start, end, string in self.tokens:
            if lo <= start and end <= hi and string == text:
                return start, end
        raise ValueError(f"no {text!r} between offsets {lo} and {hi}")

    def place(self, start):
        line = next(i for i in range(len(self.starts)) if self.starts[i + 1] > start)
        return line + 1, start - self.starts[line]


def _excluded_nodes(tree):
    """Ids of the AST nodes whose subtrees are never mutated (see the module docstring)."""
    skip = set()

    def skip_tree(node):
        skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            skip_tree(body[0])                               # docstring
        if isinstance(node, (ast.Assert, ast.Raise, ast.JoinedStr)):
            skip_tree(node)
        elif isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body):
            skip_tree(node.test)                             # a parameter check
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            skip_tree(node)
        elif isinstance(node, ast.keyword) and node.arg in _SKIPPED_KEYWORDS:
            skip_tree(node)
    return skip


def _is_domain_assignment(node):
    """``m.d.<domain> += ...`` (an Amaranth statement added to a domain)."""
    target = node.target
    return (isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and
            isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute) and
            target.value.attr == "d")


def mutants_of_source(source, file="<source>"):
    """Every mutant of ``source`` (Python text), in source order.

    Parameters
    ----------
    source : str
        The file's text.
    file : str
        The name the ids carry (``rtl/pe.py``).

    Returns
    -------
    list of Mutant
    """
    tree = ast.parse(source)
    pos = _Positions(source)
    skip = _excluded_nodes(tree)
    found = []

    def add(operator, start, end, after):
        missing = source.count("\n", start, end) - after.count("\n")
        if missing > 0:         # keep every later line where it was (reports name lines)
            after = after[:-1] + "\n" * missing + after[-1:] if after.endswith(")") else \
                after + "\n" * missing
        line, col = pos.place(start)
        found.append(Mutant(file, line, col, operator, source[start:end], after, start, end))

    def add_token(operator, left, right, before, after):
        start, end = pos.token_between(left, right, before)
        add(operator, start, end, after)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            operands = [node.left] + node.comparators
            for i, op in enumerate(node.ops):
                if type(op) in _CMP:
                    before, after = _CMP[type(op)]
                    add_token("cmp", operands[i], operands[i + 1], before, after)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            before, after, operator = _BIN[type(node.op)]
            add_token(operator, node.left, node.right, before, after)
            if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
                start, end = pos.span(node)
                for kept in (node.left, node.right):
                    k0, k1 = pos.span(kept)
                    add("drop-cond", start, end, f"({source[k0:k1]})")
        elif isinstance(node, ast.BoolOp):
            before, after = _BOOL[type(node.op)]
            for left, right in zip(node.values, node.values[1:]):
                add_token("logic", left, right, before, after)
            start, end = pos.span(node)
            for i in range(len(node.values)):
                kept = [pos.span(v) for j, v in enumerate(node.values) if j != i]
                text = f" {before} ".join(f"({source[a:b]})" for a, b in kept)
                add("drop-cond", start, end, f"({text})")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Invert, ast.Not)):
            start, end = pos.span(node)
            o0, o1 = pos.span(node.operand)
            add("drop-not", start, end, f"({source[o0:o1]})")
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            start, end = pos.span(node)
            add("const", start, end, str(node.value + 1))
            add("const", start, end, str(node.value - 1) if node.value else "(-1)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id == "Mux" and len(node.args) == 3 and not node.keywords:
            (a0, a1), (b0, b1) = pos.span(node.args[1]), pos.span(node.args[2])
            start, end = pos.span(node)
            swapped = source[start:a0] + source[b0:b1] + source[a1:b0] + source[a0:a1] + \
                source[b1:end]
            add("mux-swap", start, end, swapped)
        elif isinstance(node, ast.AugAssign) and _is_domain_assignment(node):
            start, end = pos.span(node)
            add("drop-stmt", start, end, "pass" + "\n" * source[start:end].count("\n"))
    unique = {m.id: m for m in found}          # one edit reachable two ways counts once
    return sorted(unique.values(), key=lambda m: (m.start, m.end, m.operator, m.after))


def mutants_of_file(root, rel_path, source=None):
    """Every mutant of the file ``rel_path`` (``rtl/pe.py``) under the package folder ``root``
    (or of ``source``, that file's text from elsewhere, e.g. the last commit)."""
    from pathlib import Path
    if source is None:
        source = (Path(root) / rel_path).read_text(encoding="utf-8")
    return mutants_of_source(source, rel_path)
