"""The answer grammar: LaTeX-ish math to nested tuples, by recursive descent over whitelisted tokens.

Nothing is ever passed to ``eval``, ``sympify`` or ``parse_expr``; length, digits, nesting and exponents are
capped here, and the caps are shared by the other checker modules.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

MAX_RESPONSE_CHARS = 20_000  # final answers sit at the end; only the tail is searched
MAX_ANSWER_CHARS = 600  # the longest MATH-500 answer is ~80 characters
MAX_DIGITS = 120  # per number literal; a 10,000-digit "answer" is rejected, not parsed
MAX_RESULT_DIGITS = 1_000  # exact powers/factorials bigger than this are treated as hostile
MAX_EXPONENT = 1_000  # x^1000 is the largest power a symbolic check will build
MAX_DEPTH = 24  # bracket nesting; MATH answers stay below 6
MAX_ITEMS = 64  # elements of a set, tuple or matrix
MAX_SUM_TERMS = 200  # \sum_{k=1}^{200}: written out term by term, so its length is capped
# Nodes all sums of one answer may write out together: nested sums multiply (200^3 = 8M terms took 22 s and
# 600 MB), so the cap is on total work, not per sum. 20,000 keeps a double sum of 100 x 100 small terms.
MAX_EXPANDED_NODES = 20_000

Node = Any  # nested tuples (lists after a JSON round trip); see _Parser for the node kinds


class _Reject(ValueError):
    """Input that is malformed or too big to compare safely."""


class _TooLarge(_Reject):
    """Mathematics that parses but is too much work to write out (a long or nested sum): never read as text."""


_TOKEN = re.compile(
    r"(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:\\overline\{\d+\})?)|(?P<cmd>\\[a-zA-Z]+|\\[{}|])|(?P<word>[a-zA-Z]+)"
    r"|(?P<op>\*\*|[-+*/^_!(){}\[\]|,=<>])|(?P<space>\s+)|(?P<bad>.)"
)
_FUNCS = {
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "exp",
    "ln",
    "log",
}
_GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
}
_MUL_CMDS = {"\\cdot", "\\times", "\\ast"}


def _number(text: str) -> Node:
    """An exact rational from a decimal literal, with a repeating part: 0.1\\overline{6} = 1/6."""
    rep = ""
    if "\\overline" in text:
        text, rep = text.split("\\overline{")
        rep = rep.rstrip("}")
    if len(text.replace(".", "")) + len(rep) > MAX_DIGITS:
        raise _Reject("number literal too long")
    value = Fraction(text if text != "." else "0")
    if rep:
        decimals = len(text.split(".", 1)[1]) if "." in text else 0
        value += Fraction(int(rep), 10**decimals * (10 ** len(rep) - 1))
    return ("num", value.numerator, value.denominator)


class _Parser:
    """Recursive descent over LaTeX-ish math. Node kinds: num, sym, const, add, mul, neg, div, pow, sqrt,
    root, fn, log, fact, abs, base. Anything outside the grammar raises ``_Reject``."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup or "bad"
            if kind == "bad":
                raise _Reject(f"unexpected character {m.group(0)!r}")
            if kind != "space":
                self.tokens.append((kind, m.group(0)))
        if len(self.tokens) > 300:
            raise _Reject("expression too long")
        self.pos = 0
        self.depth = 0
        self.in_abs = 0
        self.expanded = 0  # nodes written out by \sum so far (MAX_EXPANDED_NODES)

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end" or (value is not None and tok[1] != value):
            raise _Reject(f"expected {value or 'more'} at token {self.pos}")
        self.pos += 1
        return tok

    def parse(self) -> Node:
        node = self.expr()
        if self.pos != len(self.tokens):
            raise _Reject(f"unexpected {self.peek()[1]!r}")
        return node

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject("nested too deeply")

    def expr(self) -> Node:
        self._enter()
        terms = [self.term()]
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            t = self.term()
            terms.append(t if op == "+" else ("neg", t))
        self.depth -= 1
        return terms[0] if len(terms) == 1 else ("add", *terms)

    def _starts_atom(self) -> bool:
        kind, val = self.peek()
        if kind in ("num", "word"):
            return True
        if kind == "cmd":
            return val not in _MUL_CMDS and val not in ("\\div", "\\pm", "\\cup", "\\le", "\\ge", "\\}")
        return val in ("(", "{", "[") or (val == "|" and not self.in_abs)

    def term(self) -> Node:
        node = self.unary()
        while True:
            kind, val = self.peek()
            if val in ("*", "/") or val in _MUL_CMDS or val == "\\div":
                self.take()
                rhs = self.unary()
                node = ("div", node, rhs) if val in ("/", "\\div") else ("mul", node, rhs)
            elif val == "\\frac" and _is_int(node):  # 1\frac{4}{5} is a mixed number
                frac = self.unary()
                mixed = frac[0] == "div" and _is_int(frac[1]) and _is_int(frac[2])
                if mixed and node[0] == "neg":
                    node = ("neg", ("add", node[1], frac))
                else:
                    node = ("add", node, frac) if mixed else ("mul", node, frac)
            elif self._starts_atom():
                node = ("mul", node, self.power())
            else:
                return node

    def unary(self) -> Node:
        if self.peek()[1] in ("-", "+"):
            sign = self.take()[1]
            self._enter()
            inner = self.unary()
            self.depth -= 1
            return ("neg", inner) if sign == "-" else inner
        return self.power()

    def power(self) -> Node:
        node = self.postfix()
        if self.peek()[1] in ("^", "**"):
            self.take()
            self._enter()
            exponent = self.group() if self.peek()[1] == "{" else self.unary()
            self.depth -= 1
            node = ("pow", node, exponent)
        return node

    def postfix(self) -> Node:
        node = self.atom()
        while self.peek()[1] == "!":
            self.take()
            node = ("fact", node)
        return node

    def group(self) -> Node:
        self.take("{")
        node = self.expr()
        self.take("}")
        return node

    def arg(self) -> Node:
        """A LaTeX macro argument: {group}, or a single digit/letter (\\frac43, \\sqrt2)."""
        kind, val = self.peek()
        if val == "{":
            return self.group()
        if kind in ("num", "word") and len(val) > 1 and "\\" not in val:
            self.tokens[self.pos] = (kind, val[1:])
            return _number(val[0]) if kind == "num" else self._letter(val[0])
        return self.power()

    def _letter(self, ch: str) -> Node:
        return {"e": ("const", "E"), "i": ("const", "I")}.get(ch, ("sym", ch))

    def atom(self) -> Node:
        self._enter()
        try:
            return self._atom()
        finally:
            self.depth -= 1

    def _atom(self) -> Node:
        kind, val = self.take()
        if kind == "num":
            node = _number(val)
            if self.peek()[1] == "_":  # 52_8: a numeral in base 8, compared as written
                self.take()
                base = self.group() if self.peek()[1] == "{" else _number(self.take()[1])
                if not _is_int(base) or not val.isdigit():
                    raise _Reject("bad base subscript")
                return ("base", val, str(base[1]))
            return node
        if val in ("(", "[", "{"):
            inner = self.expr()
            self.take({"(": ")", "[": "]", "{": "}"}[val])
            return inner
        if val == "|":
            self.in_abs += 1
            inner = self.expr()
            self.take("|")
            self.in_abs -= 1
            return ("abs", inner)
        if kind == "word":
            return self._word(val)
        if kind == "cmd":
            return self._command(val[1:])
        raise _Reject(f"unexpected {val!r}")

    def _word(self, word: str) -> Node:
        if word in _FUNCS:
            return self._function(word)
        if word == "sqrt":
            return ("sqrt", self.arg())
        if word in ("pi", "inf", "infinity"):
            return ("const", "pi" if word == "pi" else "oo")
        if len(word) > 3:
            raise _Reject(f"word {word!r} is not mathematics")
        factors = [self._letter(ch) for ch in word]
        if self.peek()[1] == "_" and len(word) == 1:
            self.take()
            sub = self.take()[1] if self.peek()[1] != "{" else self._subscript()
            return ("sym", f"{word}_{sub}")
        return factors[0] if len(factors) == 1 else ("mul", *factors)

    def _subscript(self) -> str:
        self.take("{")
        parts = []
        while self.peek()[1] != "}":
            parts.append(self.take()[1])
            if len(parts) > 8:
                raise _Reject("subscript too long")
        self.take("}")
        return "".join(parts)

    def _function(self, name: str) -> Node:
        exponent = None
        if self.peek()[1] == "^":  # \sin^2 x
            self.take()
            exponent = self.group() if self.peek()[1] == "{" else self.atom()
        base = None
        if name == "log" and self.peek()[1] == "_":
            self.take()
            base = self.arg()
        arg = self.atom() if self.peek()[1] in ("(", "{", "[") else self.power()
        node = ("log", arg, base) if base is not None else ("fn", name, arg)
        return ("pow", node, exponent) if exponent is not None else node

    def _sum(self) -> Node:
        """\\sum_{k=a}^{b} term with integer-literal bounds: the terms written out (policy summation)."""
        self.take("_")
        self.take("{")
        var = self._letter(self.take()[1])
        self.take("=")
        lo = _int_value(self.expr())
        self.take("}")
        self.take("^")
        hi = _int_value(self.arg())
        if hi - lo + 1 > MAX_SUM_TERMS:
            raise _TooLarge("sum too long")
        body = self.term()
        self.expanded += max(0, hi - lo + 1) * _size(body)
        if self.expanded > MAX_EXPANDED_NODES:
            raise _TooLarge("sums expand too far")
        terms = [_substitute(body, var, ("num", k, 1)) for k in range(lo, hi + 1)]
        return ("add", *terms) if terms else ("num", 0, 1)

    def _command(self, name: str) -> Node:
        if name == "frac":
            return ("div", self.arg(), self.arg())
        if name == "sqrt":
            if self.peek()[1] == "[":
                self.take()
                index = self.expr()
                self.take("]")
                return ("root", self.arg(), index)
            return ("sqrt", self.arg())
        if name in ("pi", "infty", "e", "i"):
            return ("const", {"pi": "pi", "infty": "oo", "e": "E", "i": "I"}[name])
        if name in _FUNCS:
            return self._function(name)
        if name == "binom":
            return ("binom", self.arg(), self.arg())
        if name == "sum":
            return self._sum()
        if name in _GREEK:
            return ("sym", name)
        if name in ("|", "vert"):
            inner = self.expr()
            self.take()
            return ("abs", inner)
        if name == "{":
            raise _Reject("a set inside an expression")
        raise _Reject(f"unsupported command \\{name}")


def _size(node: Node) -> int:
    return 1 + sum(_size(c) for c in node[1:] if isinstance(c, tuple))


def _substitute(node: Node, var: Node, value: Node) -> Node:
    if node == var:
        return value
    return tuple(_substitute(c, var, value) if isinstance(c, tuple) else c for c in node)


def _int_value(node: Node) -> int:
    if node[0] == "neg":
        return -_int_value(node[1])
    if node[0] == "num" and node[2] == 1:
        return node[1]
    raise _Reject("sum bounds must be integer literals")


def _is_int(node: Node) -> bool:
    if node[0] == "neg":
        return _is_int(node[1])
    return node[0] == "num" and node[2] == 1


def _parse_expr(text: str) -> Node:
    text = text.strip()
    if not text:
        raise _Reject("empty")
    return _Parser(text).parse()
