"""Parsing: an answer string (extracted or gold) to a comparable value (expr, set, tuple, interval, ...).

Cleaning strips presentation (delimiters, units, currency, thousands separators) but not mathematics; the
value parser then splits sets, tuples, intervals, matrices and equations and hands each expression to the
grammar in ``grammar.py``. Text that is not mathematics becomes a normalised ``text`` node.
"""

from __future__ import annotations

import re

from mathgpt.checker.grammar import (
    MAX_ANSWER_CHARS,
    MAX_DEPTH,
    MAX_ITEMS,
    Node,
    _parse_expr,
    _Reject,
    _TooLarge,
)

_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\ufe63": "-",
    "\uff0d": "-",
    "\u00d7": "\\times ",
    "\u00f7": "\\div ",
    "\u22c5": "\\cdot ",
    "\u03c0": "\\pi ",
    "\u221a": "\\sqrt ",
    "\u221e": "\\infty ",
    "\u00b0": "^\\circ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u222a": "\\cup ",
    "\u00b1": "\\pm ",
    "\u00a0": " ",
    "\u2009": " ",
    "\u2205": "\\emptyset ",
    "\u2213": "\\mp ",
    "\u2236": ":",
}
# "√x³", "x²": a run of superscript digits is one exponent (policy radicals).
_SUPERSCRIPTS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "0123456789")
_SUPERSCRIPT_RUN = re.compile("[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+")
# All real numbers, as a set symbol or in words, is the interval (-oo, oo) (policy all_reals).
_REALS = re.compile(r"\\mathbb\s*\{?\s*R\s*\}?|\u211d|\ball\s+real\s+numbers\b", re.I)
# Short English answers the grammar would read as a product of letters ("odd" = o*d*d): policy text_case.
_ANSWER_WORDS = {"yes", "no", "odd", "all", "none", "both", "true", "false", "even", "never", "neither"}
_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox|operatorname)\s*"
_SCALE = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_MATH_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "inf", "infty"}


# Linear-time by construction, as in extract.py: no two adjacent quantifiers over the same characters, and a
# match that can start anywhere in a run of spaces starts only at the run's first one.
_UNIT_TEXT = re.compile(r"(\S)\s*" + _TEXT_CMD + r"\{[^{}]*\}(?:\s*\^\s*\{?\d\}?)?[\s.]*$")
_AND_OR = re.compile(r"(?<![\s,])(?:\s*,)?\s+(?:and|or)\s+")
_SPACES = re.compile(r"\s+")


def _clean(s: str, dataset: str) -> str:
    """Strip presentation (delimiters, spacing, units, currency, percent, degrees) but not mathematics."""
    s = _SPACES.sub(" ", s)  # runs of spaces and newlines mean one space in an answer
    s = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + m.group(0).translate(_SUPERSCRIPTS) + "}", s)
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?:\.|(?![a-zA-Z]))", "", s)
    s = re.sub(r"(\d),\\!\s*(?=\d{3}(?!\d))", r"\1", s)  # 10,\!080
    s = re.sub(r"(\d)(?:\{,\}|\\,)(?=\d{3}(?!\d))", r"\1", s)  # 10{,}080, 10\,080
    s = _REALS.sub(r"(-\\infty, \\infty)", s)
    s = re.sub(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d)", lambda m: _thousands(s, m), s)
    s = re.sub(r"(?<!\\)\\[!,;:> ]|\\q?quad\b|~", " ", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\{\s*\}|\\colon\b", lambda m: ":" if "colon" in m.group(0) else "", s)  # x{}^3; a \colon b
    s = re.sub(r"\\\\\s*\[[^\]]{0,8}\]", r"\\\\ ", s)  # matrix row spacing: \\[2mm]
    s = re.sub(r"\\begin\{array\}\{[^{}]*\}(.*)\\end\{array\}", r"\\begin{pmatrix}\1\\end{pmatrix}", s)
    s = re.sub(r"\\(?:\(|\)|\[|\])|\\?\$|\\displaystyle|\\%|%|\\?(?:€|£|¥)|\bUSD\b", " ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree", " ", s)
    for _ in range(4):  # trailing units: "15\mbox{ cm}^2", "5.4 \text{ cents}"
        s = _UNIT_TEXT.sub(r"\1", s.strip())
    s = re.sub(_TEXT_CMD + r"\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"(\d)\s*[eE]([+-]?\d+)\b", r"\1\\times 10^{\2}", s)
    s = re.sub(r"\s*\b(thousand|million|billion|trillion)\b", lambda m: f"\\times 10^{_SCALE[m[1]]}", s)
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in\b", "", s)
    s = _AND_OR.sub(", ", s)
    s = s.strip().rstrip(".").strip()
    for _ in range(6):  # plain trailing words: "18 dollars per day"
        m = re.search(r"(?<=\S)\s+([a-zA-Z]{2,})\.?(?:\^\s*\{?\d\}?)?$", s)
        if not m or m.group(1).lower() in _MATH_NAMES or not re.search(r"[\d\\]", s[: m.start()]):
            break
        s = s[: m.start()].rstrip()
    if dataset == "gsm8k" and "=" in s:  # "9 * 2 = 18": the result is the answer
        s = s.rsplit("=", 1)[1]
    return s.strip().rstrip(".,").strip()


def _thousands(s: str, m: re.Match) -> str:
    """ "1,234" is 1234 at top level, but two items inside brackets: (1,234), [0,100) (comma_in_brackets)."""
    before = s[: m.start()]
    depth = sum(before.count(c) for c in "([") - sum(before.count(c) for c in ")]")
    depth += before.count("\\{") - before.count("\\}")
    return m.group(0) if depth > 0 else m.group(0).replace(",", "")


_CHOICE = re.compile(r"\(?([A-Z])\)(?:\s.*)?|([A-Z])(?:[.:)]\s*.*|\s+[a-z].*)?", re.S)
_MATRIX_BEGIN = re.compile(r"\\begin\{[pbBvV]?matrix\}")
_FRAC = re.compile(r"\\frac\{[^{}]*\}\{[^{}]*\}")
_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.S)
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?'*(?:\([^()=]{1,20}\))?|\\[a-zA-Z]+")
_INEQ = {"<": ("(", ")"), "<=": ("[", "]"), ">": (")", "("), ">=": ("]", "[")}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_MIRROR = {"(": ")", "[": "]", ")": "(", "]": "["}
# The quantity an inequality bounds: x, x_1, g(x), |w| (policy inequalities).
_NAME = r"[a-zA-Z](?:_\{?\w+\}?)?(?:\([a-zA-Z]\))?"
_BOUNDED = rf"\s*(\|\s*{_NAME}\s*\||{_NAME})\s*"
_DOUBLE_INEQ = re.compile(r"(.+?)(<=|<)" + _BOUNDED + r"(<=|<)(.+)")
_DOUBLE_INEQ_DOWN = re.compile(r"(.+?)(>=|>)" + _BOUNDED + r"(>=|>)(.+)")
_SINGLE_INEQ = re.compile(_BOUNDED + r"(<=|<|>=|>)(.+)")
_LABEL = re.compile(r"\s*([^=\s][^=]{0,39}?)\s*=(?!=)(.*)")


def _scaled_matrix(s: str) -> tuple[str, str] | None:
    """("2", "\\begin{pmatrix}...") for a scalar (plain, or with one \\frac) before a matrix, else None."""
    at = s.find("\\begin{")
    factor = s[:at].strip() if at > 0 else ""
    if not factor or factor[-1] in "([{" or "\\" in _FRAC.sub("", factor, count=1):
        return None
    if not _MATRIX_BEGIN.match(s, at):
        return None
    return factor, s[at:]


def _bracket_depths(s: str) -> list[int]:
    """Depth before each character; raises on an unbalanced or too deeply nested string."""
    depth, out = 0, []
    for c in s:
        out.append(depth)
        if c in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _Reject("nested too deeply")
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                raise _Reject("unbalanced brackets")
    if depth != 0:
        raise _Reject("unbalanced brackets")
    return out


def _split_top(s: str, sep: str) -> list[str]:
    depths = _bracket_depths(s)
    parts, start, i = [], 0, 0
    while i <= len(s) - len(sep):
        if depths[i] == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            start = i = i + len(sep)
        else:
            i += 1
    parts.append(s[start:])
    if len(parts) > MAX_ITEMS:
        raise _Reject("too many items")
    return parts


def _encloses(s: str) -> bool:
    """True if the first bracket of s closes at its last character, as in "(1, 2]" but not "(1)(2)"."""
    depths = _bracket_depths(s)
    return len(s) >= 2 and s[0] in "([{" and all(d > 0 for d in depths[1:])


def _interval(left: str, lo: Node, hi: Node, right: str) -> Node:
    # An open interval and an ordered pair are written alike; both become a 2-tuple so they compare equal.
    if left == "(" and right == ")":
        return ("tuple", ("expr", lo), ("expr", hi))
    return ("interval", left, ("expr", lo), ("expr", hi), right)


def _has_symbols(node: Node) -> bool:
    if node[0] in ("sym", "base"):
        return True
    return any(isinstance(c, (tuple, list)) and _has_symbols(c) for c in node[1:])


def _value(s: str, depth: int = 0) -> Node:
    """An answer string as a value: expr, text, choice, set, tuple, interval, union, matrix or eq."""
    s = s.strip()
    if depth > 4:
        raise _Reject("nested too deeply")
    if not s:
        raise _Reject("empty")
    if m := _CHOICE.fullmatch(s):  # "(B) 12 apples", "B because ...", "A: the parabola" (choice_letter)
        return ("choice", m.group(1) or m.group(2))
    if s.lower() in _ANSWER_WORDS:
        return ("text", s.lower())
    if s in ("\\emptyset", "\\varnothing", "\\{\\}"):
        return ("set",)
    if scaled := _scaled_matrix(s):  # 2\begin{pmatrix}1\\2\end{pmatrix} (scalar_vector)
        factor, rest = scaled
        scale = ("neg", ("num", 1, 1)) if factor == "-" else _parse_expr(factor)
        matrix = _value(rest, depth + 1)
        return ("matrix", *[tuple(("mul", scale, c) for c in row) for row in matrix[1:]])
    if m := _MATRIX.fullmatch(s):
        rows = [r for r in (r.strip() for r in m.group(2).split("\\\\")) if r]
        cells = [[_parse_expr(c) for c in r.split("&")] for r in rows]
        if not cells or len({len(r) for r in cells}) != 1 or sum(map(len, cells)) > MAX_ITEMS:
            raise _Reject("bad matrix")
        return ("matrix", *[tuple(r) for r in cells])
    if len(parts := _split_top(s, "\\cup")) > 1:
        return ("union", *[_value(p, depth + 1) for p in parts])
    if s.startswith("\\{") and s.endswith("\\}") and _encloses(s[1:-2] + "}"):
        return ("set", *_flatten_sets([_value(p, depth + 1) for p in _split_top(s[2:-2], ",")]))
    if s[0] in "{([" and _encloses(s) and (s[0] == "{" or _MATRIX.fullmatch(s[1:-1].strip())):
        return _value(s[1:-1], depth + 1)  # a LaTeX group, or brackets around a matrix: \left(\begin{array}..
    if _encloses(s):
        items = _split_top(s[1:-1], ";")  # (1;0;4): a semicolon separates items too (policy solution_sets)
        items = items if len(items) > 1 else _split_top(s[1:-1], ",")
        if len(items) >= 2:
            if s[0] == "(" and s[-1] == ")" or len(items) > 2:
                return ("tuple", *[_value(p, depth + 1) for p in items])
            return _interval(s[0], _parse_expr(items[0]), _parse_expr(items[1]), s[-1])
    if len(items := _split_top(s, ";")) > 1 or len(items := _split_top(s, ",")) > 1:
        labels = [
            (re.sub(r"\s+", "", m[1]), m[2]) for p in items if (m := _LABEL.fullmatch(p)) and _is_name(m[1])
        ]
        if len(labels) == len(items) and len({n for n, _ in labels}) == len(labels):  # PQ = 2, RS = 9
            return ("labels", *[(name, _value(v, depth + 1)) for name, v in labels])  # (policy labels)
        return ("set", *_flatten_sets([_value(p, depth + 1) for p in items]))
    if len(re.findall(r"\\(?:pm|mp)\b", s)) in (1, 2):  # 1 \pm \sqrt{19}: the set of both values (plus_minus)
        sign = re.search(r"\\(?:pm|mp)\b", s)
        assert sign is not None
        first, second = ("+", "-") if sign.group(0) == "\\pm" else ("-", "+")
        variants = [s[: sign.start()] + op + " " + s[sign.end() :] for op in (first, second)]
        return ("set", *_flatten_sets([_value(v, depth + 1) for v in variants]))
    t = re.sub(
        r"\\leq?\b", "<=", re.sub(r"\\geq?\b", ">=", re.sub(r"\\lt\b", "<", re.sub(r"\\gt\b", ">", s)))
    )
    if m := _DOUBLE_INEQ.fullmatch(t) or _DOUBLE_INEQ_DOWN.fullmatch(t):
        lo, op_lo, name, op_hi, hi = m[1], m[2], m[3], m[4], m[5]
        if op_lo.startswith(">"):  # 5 > x > 2 is 2 < x < 5
            lo, op_lo, op_hi, hi = hi, _FLIP[op_hi], _FLIP[op_lo], lo
        left, right = _INEQ[op_lo][0], _INEQ[op_hi][1]
        return _bounded(name, left, _parse_expr(lo), _parse_expr(hi), right)
    if m := _SINGLE_INEQ.fullmatch(t):
        bound, right = _parse_expr(m[3]), _INEQ[m[2]][1]
        if m[2].startswith("<"):
            return _bounded(m[1], "(", ("neg", ("const", "oo")), bound, right)
        return _bounded(m[1], right, bound, ("const", "oo"), ")")
    sides = _split_top(s, "=")
    if len(sides) == 2:
        lhs, rhs = sides[0].strip(), sides[1]
        if _is_name(lhs) or _is_label(lhs):  # x = 5; |MN| = 6; (x, y) = (3, 2) (labelled_tuple, labels)
            return _value(rhs, depth + 1)
        try:
            lhs_node = _parse_expr(lhs)
        except _Reject:  # P(A \cap B) = \frac12: a left side outside the grammar names the value
            return _value(rhs, depth + 1)
        if not _has_symbols(lhs_node):  # "\frac{6}{3} = 2": a computation, the result is the answer
            return _value(rhs, depth + 1)
        return ("eq", lhs_node, _parse_expr(rhs))
    if len(sides) > 2:
        return _value(sides[-1], depth + 1)
    if len(parts := _split_top(s, ":")) == 2:  # 3 : 8, a ratio (policy labels): not a fraction, not a pair
        return ("ratio", ("expr", _parse_expr(parts[0])), ("expr", _parse_expr(parts[1])))
    return ("expr", _parse_expr(s))


def _name_node(node: Node) -> bool:
    """A product of letters, its absolute value or a quotient of such: PQ, |MN|, \\frac{AM}{MC}."""
    if node[0] == "sym" or node[0] == "const" and node[1] in ("E", "I"):
        return True
    if node[0] in ("mul", "div"):
        return all(_name_node(c) for c in node[1:])
    return node[0] == "abs" and _name_node(node[1])


def _is_name(lhs: str) -> bool:
    """A left side that names the asked quantity (x, x_1, f(2), PQ, |MN|, \\frac{AM}{MC}), not an expression."""
    lhs = lhs.strip()
    if _VARIABLE.fullmatch(lhs):
        return True
    try:
        return _name_node(_parse_expr(lhs))
    except _Reject:
        return False


def _bounded(name: str, left: str, lo: Node, hi: Node, right: str) -> Node:
    """The set an inequality allows: an interval, or for |w| the two mirrored intervals (policy inequalities).

    lo <= |w| <= hi is [-hi, -lo] U [lo, hi]; with lo = 0 (or no lower bound) the two halves meet in [-hi, hi].
    """
    if not name.startswith("|"):
        return _interval(left, lo, hi, right)
    if lo == ("neg", ("const", "oo")) or lo == ("num", 0, 1) and left == "[":
        return _interval(_MIRROR[right], ("neg", hi), hi, right)
    mirror = _interval(_MIRROR[right], ("neg", hi), ("neg", lo), _MIRROR[left])
    return ("union", mirror, _interval(left, lo, hi, right))


def _is_label(lhs: str) -> bool:
    """A tuple of variable names, as in "(x, y) = (3, 2)"."""
    if not (lhs.startswith("(") and lhs.endswith(")")):
        return False
    items = [p.strip() for p in lhs[1:-1].split(",")]
    return len(items) >= 2 and all(_VARIABLE.fullmatch(p) for p in items)


def _flatten_sets(items: list[Node]) -> list[Node]:
    out: list[Node] = []
    for item in items:
        out.extend(item[1:] if item[0] == "set" else [item])
    return out


def parse_answer(answer: str, dataset: str) -> Node:
    """An extracted answer (or gold) as a comparable value; text that is not mathematics becomes ``text``."""
    if len(answer) > MAX_ANSWER_CHARS:
        raise _Reject("answer too long")
    s = _clean(answer, dataset)
    try:
        return _value(s)
    except _TooLarge:  # a sum too long to write out is not text either: a gold like it is ungradable
        raise
    except _Reject:  # "\text{June 20}", "3:1", "\overline{CD}": compared as normalised text
        text = re.sub(r"\\[a-zA-Z]+|[^a-z0-9:]", "", s.lower())
        if not text:
            raise
        return ("text", text)
