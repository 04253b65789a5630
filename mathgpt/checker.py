"""Answer checker: pull the model's final committed answer out of a response and decide if it equals the gold.

Every accuracy the project reports rests on this module, so it is strict where public checkers are loose:
- Extraction takes the last *committed* answer (``#### N``, ``\\boxed{}``, "the answer is", markdown bold on
  the last line); it falls back to a number only when the whole response is a bare answer or the final
  sentence is a conclusion ("So ... = 18.") with exactly one number, never to "the last number in the text".
- Parsing turns an answer string into plain nested tuples through a small whitelisted grammar (numbers,
  + - * / ^, \\frac, \\sqrt, \\pi, letters, a few functions, sets, tuples, intervals, matrices). Nothing is
  ever passed to ``eval``, ``sympify`` or ``parse_expr``; length, digits, nesting and exponents are capped.
- Comparison is exact for rational numbers in-process (most answers, no sympy). Anything symbolic goes to a
  worker *subprocess* that builds sympy objects from the tuples, with a wall-clock timeout enforced by the
  caller (kill + restart, so it holds in threads, unlike SIGALRM) and an address-space limit set inside it.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

from mathgpt.config import ConfigError

DATASETS = ("gsm8k", "math")
MAX_RESPONSE_CHARS = 20_000  # final answers sit at the end; only the tail is searched
MAX_ANSWER_CHARS = 600  # the longest MATH-500 answer is ~80 characters
MAX_DIGITS = 120  # per number literal; a 10,000-digit "answer" is rejected, not parsed
MAX_RESULT_DIGITS = 1_000  # exact powers/factorials bigger than this are treated as hostile
MAX_EXPONENT = 1_000  # x^1000 is the largest power a symbolic check will build
MAX_DEPTH = 24  # bracket nesting; MATH answers stay below 6
MAX_ITEMS = 64  # elements of a set, tuple or matrix
CHECK_TIMEOUT_S = 0.6  # one symbolic comparison; the budget is 1 s per check
STARTUP_TIMEOUT_S = 30.0  # a cold worker imports sympy once (~0.5 s warm, more on a busy box)
WORKER_MEMORY_BYTES = 1_536 * 2**20

Node = Any  # nested tuples (lists after a JSON round trip); see _Parser for the node kinds


class _Reject(ValueError):
    """Input that is malformed or too big to compare safely: the verdict is false."""


# ---------------------------------------------------------------------------------------------- extraction

_CONTINUATION = re.compile(r"\n\s*(?:question|problem|q|human|user|###\s*instruction)\s*[:.]", re.I)
_PHRASE = re.compile(
    r"(?:final\s+answer|\banswer)[\s*]*(?:is|was|would\s+be|will\s+be|should\s+be|[:=])[\s*:]*", re.I
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BOLD = re.compile(r"\*\*([^*\n]{1,80})\*\*")
_HEDGE = re.compile(r"\b(?:or|either|maybe|perhaps|possibly|probably|might|not sure|unsure)\b|\?", re.I)
_NOT_AN_ANSWER = re.compile(
    r"(?:correct|right|wrong|incorrect|as follows|below|above|that|not|clear|simple|obvious|unknown|"
    r"the following|in the|given by|found|calculated)\b",
    re.I,
)
_CONCLUSION = re.compile(
    r"^(?:so|therefore|thus|hence|in total|altogether|in all|overall|finally|consequently)\b", re.I
)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?%?|-?\$?\.\d+%?")
_WORD4 = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}")
_UNIT_WORDS = {
    "dollars",
    "dollar",
    "cents",
    "cent",
    "percent",
    "degrees",
    "degree",
    "units",
    "unit",
    "inches",
    "inch",
    "feet",
    "foot",
    "yards",
    "miles",
    "meters",
    "metres",
    "hours",
    "hour",
    "minutes",
    "minute",
    "seconds",
    "days",
    "weeks",
    "years",
    "months",
    "pounds",
    "ounces",
    "grams",
    "liters",
    "litres",
    "gallons",
    "square",
    "cubic",
    "each",
    "total",
    "apples",
    "people",
    "students",
    "eggs",
    "points",
    "pages",
    "books",
    "cookies",
}


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start]`` and the index after it; None if unbalanced."""
    depth = 0
    for i in range(start, min(len(text), start + MAX_ANSWER_CHARS * 2)):
        c = text[i]
        if c == "{" and text[i - 1] != "\\":  # an escaped brace (\{ in a set) is content
            depth += 1
            if depth > MAX_DEPTH:
                return None
        elif c == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def _span_after(text: str, pos: int) -> str:
    """The answer stated after "the answer is": a display block, or the rest of the sentence."""
    rest = text[pos : pos + MAX_ANSWER_CHARS]
    for open_, close in (("$$", "$$"), ("\\[", "\\]")):
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            return rest[len(open_) : end] if end > 0 else ""
    line = rest.split("\n", 1)[0]
    end = re.search(r"\.(?=\s|$)|(?<!\\);", line)
    return (line[: end.start()] if end else line).strip()


def _candidates(text: str) -> list[tuple[int, int, str, str]]:
    """Committed answers as (start, end, kind, span), in no particular order."""
    found = []
    for m in re.finditer(r"####[ \t]*([^\n]*)", text):
        found.append((m.start(), m.end(), "hash", m.group(1).strip()))
    for m in _BOXED.finditer(text):
        if m.end() < len(text) and text[m.end()] == "{":
            got = _braced(text, m.end())
            span, end = got if got else (text[m.end() : m.end() + 40], len(text))
        else:  # \boxed 5
            token = re.match(r"[^\s$]+", text[m.end() :])
            span, end = (token.group(0), m.end() + token.end()) if token else ("", m.end())
        found.append((m.start(), end, "boxed", span))
    for m in _PHRASE.finditer(text):
        if re.search(
            r"\b(?:check|verify|confirm)\w*\s+(?:our|the|my|this)?\s*$",
            text[max(0, m.start() - 30) : m.start()],
            re.I,
        ):
            continue  # "We may check our answer: ..." restates, it does not commit
        span = _span_after(text, m.end())
        if _BOXED.search(span) or not span.strip("*$ ") or _NOT_AN_ANSWER.match(span.strip("*$ ")):
            continue
        found.append((m.start(), m.start() + len(m.group(0)) + len(span), "phrase", span))
    lines = [ln for ln in text.strip().split("\n") if ln.strip()]
    if lines:
        last_line_at = text.rfind(lines[-1])
        for m in _BOLD.finditer(lines[-1]):
            inner = m.group(1).strip()
            if re.search(r"\d|\\", inner) and not _WORD4.search(re.sub("answer", "", inner, flags=re.I)):
                found.append((last_line_at + m.start(), last_line_at + m.end(), "bold", inner))
    return found


def _is_bare_answer(text: str) -> bool:
    """A whole response that is only an answer ("42", "$\\frac{1}{2}$", "x = 5", "18 dollars")."""
    if "\n" in text or len(text) > 80 or "?" in text:
        return False
    return all(w.lower() in _UNIT_WORDS for w in _WORD4.findall(text)) and bool(re.search(r"[\d\\]", text))


def _conclusion_answer(text: str) -> str | None:
    """The one number of a concluding last sentence ("So she makes 9 * 2 = $18 a day."), else None."""
    last_line = text.strip().split("\n")[-1]
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", last_line) if s.strip()]
    if not sentences:
        return None
    sentence = sentences[-1].strip()
    if not _CONCLUSION.match(sentence) or _HEDGE.search(sentence):
        return None
    inline = re.findall(r"\$([^$]+)\$", sentence)
    tail = inline[-1] if inline and "\\" in inline[-1] else sentence
    tail = tail.rsplit("=", 1)[-1]
    if "\\" in tail:  # LaTeX math in the final sentence: take it whole
        return tail.strip(" .")
    numbers = _NUMBER.findall(tail)
    return numbers[0].rstrip(",") if len(numbers) == 1 else None


def extract_answer(response: str, dataset: str) -> str | None:
    """The model's final committed answer as written (e.g. ``"$18"``, ``"\\frac{1}{2}"``), or None.

    None means "no answer": nothing committed, a hedge between answers, or an unsafe fallback.
    """
    _check_dataset(dataset)
    if not isinstance(response, str):
        return None
    text = response[-MAX_RESPONSE_CHARS:].replace("\r", "")
    cut = _CONTINUATION.search(text)
    if cut and cut.start() > 0:  # a base model that goes on to invent the next question
        text = text[: cut.start()]
    found = sorted(_candidates(text))
    if found:
        start, _, kind, span = found[-1]
        gap = text[found[-2][1] : start] if len(found) > 1 else ""
        if re.fullmatch(r"[\s$.,]*or[\s$]*", gap, re.I) and not _same_value(found[-2][3], span, dataset):
            return None  # "\boxed{5} or \boxed{6}" hedges; "\boxed{1.5} or \boxed{\frac32}" does not
        if kind != "boxed" and _HEDGE.search(re.sub(r"\\text\{[^}]*\}", "", span)):
            return None  # "the answer is 5 or 6"
        span = span.strip().strip("*").strip()
        if inline := re.fullmatch(r"\$+([^$]+)\$+", span):  # "$\frac{1}{2}$" reads as \frac{1}{2}
            span = inline.group(1).strip()
        return span or None
    stripped = text.strip().rstrip(".").strip()
    if _is_bare_answer(stripped):
        return stripped
    return _conclusion_answer(text)


def _same_value(a: str, b: str, dataset: str) -> bool:
    """Two spans that are provably the same value in-process (exact rationals, identical trees)."""
    try:
        return _equal(parse_answer(a, dataset), parse_answer(b, dataset), _fast_expr_equal) is True
    except (_Reject, RecursionError, OverflowError, ValueError, ZeroDivisionError):
        return False


def gold_answer(gold: str, dataset: str) -> str:
    """The answer part of a gold in native form: after ``####`` (GSM8K) or the last ``\\boxed{}`` (MATH)."""
    _check_dataset(dataset)
    if dataset == "gsm8k" and "####" in gold:
        return gold.rsplit("####", 1)[1].strip()
    if dataset == "math" and "\\boxed" in gold:
        boxed = [c for c in _candidates(gold[-MAX_RESPONSE_CHARS:]) if c[2] == "boxed"]
        if boxed:
            return max(boxed)[3]
    return gold.strip()


# ------------------------------------------------------------------------------------------------- cleaning

_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\ufe63": "-",
    "\uff0d": "-",
    "\u00d7": "\\times ",
    "\u00f7": "\\div ",
    "\u22c5": "\\cdot ",
    "\u03c0": "\\pi ",
    "\u221a": "\\sqrt",
    "\u221e": "\\infty ",
    "\u00b0": "^\\circ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u222a": "\\cup ",
    "\u00b1": "\\pm ",
    "\u00a0": " ",
    "\u2009": " ",
    "\u2205": "\\emptyset ",
}
_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox|operatorname)\s*"
_SCALE = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_MATH_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "inf", "infty"}


def _clean(s: str, dataset: str) -> str:
    """Strip presentation (delimiters, spacing, units, currency, percent, degrees) but not mathematics."""
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?:\.|(?![a-zA-Z]))", "", s)
    s = re.sub(r"(\d),\\!\s*(?=\d{3}(?!\d))", r"\1", s)  # 10,\!080
    s = re.sub(r"(\d)(?:\{,\}|\\,)(?=\d{3}(?!\d))", r"\1", s)  # 10{,}080, 10\,080
    s = re.sub(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?!\d)", lambda m: m.group(0).replace(",", ""), s)
    s = re.sub(r"(?<!\\)\\[!,;:> ]|\\q?quad\b|~", " ", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\(?:\(|\)|\[|\])|\\?\$|\\displaystyle|\\%|%|\\?(?:€|£|¥)|\bUSD\b", " ", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree", " ", s)
    for _ in range(4):  # trailing units: "15\mbox{ cm}^2", "5.4 \text{ cents}"
        s = re.sub(r"(\S)\s*" + _TEXT_CMD + r"\{[^{}]*\}\s*(?:\^\s*\{?\d\}?)?\s*\.?\s*$", r"\1", s.strip())
    s = re.sub(_TEXT_CMD + r"\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"(\d)\s*[eE]([+-]?\d+)\b", r"\1\\times 10^{\2}", s)
    s = re.sub(r"\s*\b(thousand|million|billion|trillion)\b", lambda m: f"\\times 10^{_SCALE[m[1]]}", s)
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in\b", "", s)
    s = re.sub(r"\s*,?\s+(?:and|or)\s+", ", ", s)
    s = s.strip().rstrip(".").strip()
    for _ in range(6):  # plain trailing words: "18 dollars per day"
        m = re.search(r"(?<=\S)\s+([a-zA-Z]{2,})\.?(?:\^\s*\{?\d\}?)?$", s)
        if not m or m.group(1).lower() in _MATH_NAMES or not re.search(r"[\d\\]", s[: m.start()]):
            break
        s = s[: m.start()].rstrip()
    if dataset == "gsm8k" and "=" in s:  # "9 * 2 = 18": the result is the answer
        s = s.rsplit("=", 1)[1]
    return s.strip().rstrip(".,").strip()


# ----------------------------------------------------------------------------------------- expression parser

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
        if name in _GREEK:
            return ("sym", name)
        if name in ("|", "vert"):
            inner = self.expr()
            self.take()
            return ("abs", inner)
        if name == "{":
            raise _Reject("a set inside an expression")
        raise _Reject(f"unsupported command \\{name}")


def _is_int(node: Node) -> bool:
    if node[0] == "neg":
        return _is_int(node[1])
    return node[0] == "num" and node[2] == 1


def _parse_expr(text: str) -> Node:
    text = text.strip()
    if not text:
        raise _Reject("empty")
    return _Parser(text).parse()


# -------------------------------------------------------------------------------------------- value parser

_MATRIX = re.compile(r"\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.S)
_VARIABLE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?(?:\([a-zA-Z]\))?|\\[a-zA-Z]+")
_INEQ = {"<": ("(", ")"), "<=": ("[", "]"), ">": (")", "("), ">=": ("]", "[")}


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
    if m := re.fullmatch(r"\(?([A-Z])\)(?:\s.*)?|([A-Z])", s, re.S):
        return ("choice", m.group(1) or m.group(2))
    if s in ("\\emptyset", "\\varnothing", "\\{\\}"):
        return ("set",)
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
    if s[0] == "{" and _encloses(s):  # a LaTeX group around the whole answer
        return _value(s[1:-1], depth + 1)
    if _encloses(s):
        items = _split_top(s[1:-1], ",")
        if len(items) >= 2:
            if s[0] == "(" and s[-1] == ")" or len(items) > 2:
                return ("tuple", *[_value(p, depth + 1) for p in items])
            return _interval(s[0], _parse_expr(items[0]), _parse_expr(items[1]), s[-1])
    if len(items := _split_top(s, ",")) > 1:
        return ("set", *_flatten_sets([_value(p, depth + 1) for p in items]))
    if len(pm := _split_top(s, "\\pm")) == 2:  # 1 \pm \sqrt{19} is the set of both roots
        centre = _parse_expr(pm[0]) if pm[0].strip() else ("num", 0, 1)
        offset = _parse_expr(pm[1])
        return ("set", ("expr", ("add", centre, offset)), ("expr", ("add", centre, ("neg", offset))))
    t = re.sub(
        r"\\leq?\b", "<=", re.sub(r"\\geq?\b", ">=", re.sub(r"\\lt\b", "<", re.sub(r"\\gt\b", ">", s)))
    )
    if m := re.fullmatch(r"(.+?)(<=|<)\s*([a-zA-Z])\s*(<=|<)(.+)", t):
        return _interval(_INEQ[m[2]][0], _parse_expr(m[1]), _parse_expr(m[5]), _INEQ[m[4]][1])
    if m := re.fullmatch(r"\s*([a-zA-Z])\s*(<=|<|>=|>)(.+)", t):
        bound, right = _parse_expr(m[3]), _INEQ[m[2]][1]
        if m[2].startswith("<"):
            return _interval("(", ("neg", ("const", "oo")), bound, right)
        return _interval(right, bound, ("const", "oo"), ")")
    sides = _split_top(s, "=")
    if len(sides) == 2:
        lhs, rhs = sides[0].strip(), sides[1]
        if _VARIABLE.fullmatch(lhs):
            return _value(rhs, depth + 1)
        lhs_node = _parse_expr(lhs)
        if not _has_symbols(lhs_node):  # "\frac{6}{3} = 2": a computation, the result is the answer
            return _value(rhs, depth + 1)
        return ("eq", lhs_node, _parse_expr(rhs))
    if len(sides) > 2:
        return _value(sides[-1], depth + 1)
    return ("expr", _parse_expr(s))


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
    except _Reject:  # "\text{June 20}", "3:1", "\overline{CD}": compared as normalised text
        text = re.sub(r"\\[a-zA-Z]+|[^a-z0-9:]", "", s.lower())
        if not text:
            raise
        return ("text", text)


# -------------------------------------------------------------------------------------------- comparison

ExprCmp = Callable[[Node, Node, bool], "bool | None"]


def _exact(node: Node) -> Fraction | None:
    """The exact rational value of a node, None when it is not a plain rational (sqrt, pi, symbols)."""
    kind = node[0]
    if kind == "num":
        return Fraction(node[1], node[2])
    if kind == "neg":
        v = _exact(node[1])
        return None if v is None else -v
    if kind in ("add", "mul"):
        acc = Fraction(0 if kind == "add" else 1)
        for child in node[1:]:
            v = _exact(child)
            if v is None:
                return None
            acc = acc + v if kind == "add" else acc * v
            _check_size(acc)
        return acc
    if kind == "div":
        a, b = _exact(node[1]), _exact(node[2])
        if a is None or b is None:
            return None
        if b == 0:
            raise _Reject("division by zero")
        return a / b
    if kind == "pow":
        base, exp = _exact(node[1]), _exact(node[2])
        if base is None or exp is None or exp.denominator != 1:
            return None
        _check_power(base, exp)
        if base == 0 and exp < 0:
            raise _Reject("division by zero")
        result = base ** int(exp)
        _check_size(result)
        return result
    if kind == "fact":
        n = _exact(node[1])
        if n is None or n.denominator != 1 or n < 0 or n > 400:
            raise _Reject("factorial out of range")
        return Fraction(math.factorial(int(n)))
    return None


def _digits(v: Fraction) -> int:
    return max(abs(v.numerator), abs(v.denominator)).bit_length() * 30103 // 100000 + 1


def _check_size(v: Fraction) -> None:
    if _digits(v) > MAX_RESULT_DIGITS:
        raise _Reject("number too large")


def _check_power(base: Fraction, exp: Fraction) -> None:
    """Refuse a power before computing it if its result would have more than MAX_RESULT_DIGITS digits."""
    if abs(exp) > MAX_RESULT_DIGITS * 4:
        if base not in (0, 1, -1):
            raise _Reject("exponent too large")
    elif _digits(base) * abs(exp) > MAX_RESULT_DIGITS * 2 and abs(base) != 1:
        raise _Reject("power too large")


def _fast_expr_equal(a: Node, b: Node, equation: bool) -> bool | None:
    """In-process verdict for rational numbers and identical trees; None when sympy must decide."""
    if a == b:
        return True
    if equation:
        return None
    va, vb = _exact(a), _exact(b)
    if va is not None and vb is not None:
        return va == vb
    return None


def _all(verdicts: list[bool | None]) -> bool | None:
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


def _matching(xs: list[Node], ys: list[Node], cmp: ExprCmp) -> bool | None:
    """Multiset equality under ``_equal`` (every element matched once): a bipartite matching."""
    if len(xs) != len(ys):
        return False
    table = [[_equal(x, y, cmp) for y in ys] for x in xs]

    def perfect(allowed: Callable[[bool | None], bool]) -> bool:
        owner: dict[int, int] = {}

        def augment(i: int, seen: set[int]) -> bool:
            for j in range(len(ys)):
                if allowed(table[i][j]) and j not in seen:
                    seen.add(j)
                    if j not in owner or augment(owner[j], seen):
                        owner[j] = i
                        return True
            return False

        return all(augment(i, set()) for i in range(len(xs)))

    if perfect(lambda v: v is True):
        return True
    return None if perfect(lambda v: v is not False) else False


def _equal(a: Node, b: Node, cmp: ExprCmp) -> bool | None:
    ka, kb = a[0], b[0]
    for kind in ("set", "union"):
        if ka == kind or kb == kind:
            xs = list(a[1:]) if ka == kind else [a]
            ys = list(b[1:]) if kb == kind else [b]
            return _matching(xs, ys, cmp)
    if {ka, kb} == {"matrix", "tuple"}:  # a column or row vector written as a tuple
        m, t = (a, b) if ka == "matrix" else (b, a)
        if len(m) != 2 and any(len(r) != 1 for r in m[1:]):
            return False
        flat = [("expr", c) for row in m[1:] for c in row]
        return _equal(("tuple", *flat), t, cmp)
    if ka != kb:
        return False
    if ka == "expr":
        return cmp(a[1], b[1], False)
    if ka == "eq":
        return cmp(("add", a[1], ("neg", a[2])), ("add", b[1], ("neg", b[2])), True)
    if ka in ("text", "choice"):
        return a[1] == b[1]
    if ka == "tuple":
        return (
            False
            if len(a) != len(b)
            else _all([_equal(x, y, cmp) for x, y in zip(a[1:], b[1:], strict=True)])
        )
    if ka == "interval":
        if a[1] != b[1] or a[4] != b[4]:
            return False
        return _all([_equal(a[2], b[2], cmp), _equal(a[3], b[3], cmp)])
    if ka == "matrix":
        if [len(r) for r in a[1:]] != [len(r) for r in b[1:]]:
            return False
        pairs = [(x, y) for ra, rb in zip(a[1:], b[1:], strict=True) for x, y in zip(ra, rb, strict=True)]
        return _all([cmp(x, y, False) for x, y in pairs])
    return False


# --------------------------------------------------------------------------------- symbolic worker (sympy)

_POINTS = (
    (0.737, 1.291, 2.113, 0.523, 1.618),
    (1.913, 0.379, 1.237, 2.718, 0.851),
    (2.531, 1.747, 0.611, 1.103, 3.07),
)


def _to_sympy(node: Node) -> Any:
    import sympy as sp

    kind = node[0]
    if kind == "num":
        return sp.Rational(node[1], node[2])
    if kind == "sym":
        return sp.Symbol(node[1])
    if kind == "base":
        return sp.Symbol(f"{node[1]}_{node[2]}")
    if kind == "const":
        return {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo}[node[1]]
    args = [_to_sympy(c) if isinstance(c, (list, tuple)) else c for c in node[1:]]
    if kind == "add":
        return sp.Add(*args)
    if kind == "mul":
        return sp.Mul(*args)
    if kind == "neg":
        return -args[0]
    if kind == "div":
        if args[1] == 0:
            raise _Reject("division by zero")
        return args[0] / args[1]
    if kind == "pow":
        base, exp = args
        if exp.is_Number:
            if abs(exp) > MAX_EXPONENT and base not in (0, 1, -1):
                raise _Reject("exponent too large")
            if base.is_Rational and exp.is_Integer:
                _check_power(Fraction(int(base.p), int(base.q)), Fraction(int(exp)))
        if not (base.is_Rational and exp.is_Integer):  # e^{e^{e^e}}, x^{x^{x^x}}: size it before building
            at = {
                s: _POINTS[0][k % 5]
                for k, s in enumerate(sorted(base.free_symbols | exp.free_symbols, key=str))
            }
            digits = (abs(exp) * sp.log(abs(base) + 1, 10)).evalf(15, subs=at)
            if digits.is_number and digits.is_comparable and digits > MAX_RESULT_DIGITS * 10:
                raise _Reject("power too large")
        return sp.Pow(base, exp)
    if kind == "sqrt":
        return sp.sqrt(args[0])
    if kind == "root":
        return sp.root(args[0], args[1])
    if kind == "abs":
        return sp.Abs(args[0])
    if kind == "fact" or kind == "binom":
        if not all(a.is_Integer and 0 <= a <= 400 for a in args):
            raise _Reject("factorial out of range")
        return sp.factorial(args[0]) if kind == "fact" else sp.binomial(*args)
    if kind == "log":
        return sp.log(args[0], args[1])
    if kind == "fn":
        name = {"arcsin": "asin", "arccos": "acos", "arctan": "atan"}.get(node[1], node[1])
        return getattr(sp, name)(args[1])
    raise _Reject(f"unknown node {kind}")


def _numeric(expr: Any, symbols: list[Any], point: int) -> Any:
    subs = {s: _POINTS[point][k % 5] + k // 5 for k, s in enumerate(symbols)}
    return expr.evalf(50, subs=subs)


def _close(x: Any, y: Any) -> bool:
    import sympy as sp

    if not (x.is_number and y.is_number) or x.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        return False
    scale = max(1, abs(x), abs(y))
    return bool(abs(x - y) <= sp.Float("1e-30", 50) * scale)


def _sympy_expr_equal(x: Node, y: Node, equation: bool) -> bool:
    """Equal (or, for equations lhs - rhs, proportional) at every test point to 30 digits, or identical."""
    import sympy as sp

    a, b = _to_sympy(x), _to_sympy(y)
    if a == b:
        return True
    if a.has(sp.oo, -sp.oo, sp.zoo, sp.nan) or b.has(sp.oo, -sp.oo, sp.zoo, sp.nan):
        return False  # infinities are equal only when written alike (checked above)
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if len(symbols) > 10:
        return False
    if equation:
        if b == 0:
            return False
        ratios = [_numeric(a / b, symbols, p) for p in range(3)]
        return ratios[0] != 0 and all(_close(ratios[0], r) for r in ratios[1:])
    for p in range(3 if symbols else 1):
        if not _close(_numeric(a, symbols, p), _numeric(b, symbols, p)):
            return False
    return True


def _serve() -> None:
    """Worker loop: one JSON request per line in, "1"/"0" per line out. Runs in a separate process."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    sys.setrecursionlimit(3000)
    import sympy  # noqa: F401  (imported before "ready" so the first check does not pay for it)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            ok = _equal(request["a"], request["b"], _sympy_expr_equal) is True
        except Exception:  # MemoryError, RecursionError and whatever sympy raises: not provably equal
            ok = False
        sys.stdout.write("1\n" if ok else "0\n")
        sys.stdout.flush()


class _Worker:
    """A sympy subprocess that answers one comparison at a time; killed when it runs past the timeout."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from mathgpt.checker import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            bufsize=0,
        )
        self.ready = False
        self.buffer = b""

    def _readline(self, deadline: float) -> str | None:
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self.buffer:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None  # the worker died (memory limit, crash)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, a: Node, b: Node, timeout: float) -> bool | None:
        """True/False from the worker, None if it did not answer in time (the caller kills it)."""
        if not self.ready:
            if self._readline(time.monotonic() + STARTUP_TIMEOUT_S) != "ready":
                return None
            self.ready = True
        try:
            self.proc.stdin.write(json.dumps({"a": a, "b": b}).encode() + b"\n")  # type: ignore[union-attr]
        except OSError:
            return None
        reply = self._readline(time.monotonic() + timeout)
        return None if reply is None else reply == "1"

    def poll_ready(self) -> bool:
        if not self.ready and self._readline(time.monotonic()) == "ready":
            self.ready = True
        return self.ready

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


_POOL: list[_Worker] = []
_POOL_LOCK = threading.Lock()
_POOL_PID = os.getpid()


def _take_worker() -> _Worker:
    """An idle worker, ready ones first; one spare is kept starting so a kill never leaves a cold pool."""
    global _POOL_PID
    with _POOL_LOCK:
        if _POOL_PID != os.getpid():  # forked: the parent's pipes are not ours to use
            _POOL.clear()
            _POOL_PID = os.getpid()
        ready = [i for i, w in enumerate(_POOL) if w.poll_ready()]
        worker = _POOL.pop(ready[0] if ready else 0) if _POOL else _Worker()
        if not _POOL:
            _POOL.append(_Worker())
        return worker


def _symbolic_equal(a: Node, b: Node) -> bool:
    """Ask an idle worker; concurrent callers (threads) each get their own, so nobody waits on a lock."""
    worker = _take_worker()
    verdict = worker.ask(a, b, CHECK_TIMEOUT_S)
    if verdict is None:
        worker.kill()
        worker = _Worker()  # starts importing sympy now, to be ready a few calls later
    with _POOL_LOCK:
        _POOL.append(worker)
    return bool(verdict)


def warm_up(timeout: float = STARTUP_TIMEOUT_S) -> bool:
    """Start the sympy workers (one and its spare) and wait until both are ready; False if they are not.

    Optional: without it the first symbolic check pays for sympy's import (~0.5-3 s on a busy CPU).
    """
    worker = _take_worker()  # leaves a spare in the pool
    with _POOL_LOCK:
        _POOL.append(worker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _POOL_LOCK:
            if all(w.poll_ready() for w in _POOL):
                return True
        time.sleep(0.02)
    return False


@atexit.register
def _shutdown() -> None:
    with _POOL_LOCK:
        if _POOL_PID == os.getpid():
            for worker in _POOL:
                worker.kill()
        _POOL.clear()


# --------------------------------------------------------------------------------------------- public API


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown checker dataset {dataset!r} (expected one of {', '.join(DATASETS)})")


def grade(gold: str, response: str, dataset: str) -> tuple[str | None, bool]:
    """(extracted answer, verdict) in one pass: what the evaluation records for every problem."""
    extracted = extract_answer(response, dataset)
    gold = str(gold)  # SVAMP golds are floats
    if extracted is None:
        return None, False
    try:
        g = parse_answer(gold_answer(gold, dataset), dataset)
        p = parse_answer(extracted, dataset)
        verdict = _equal(g, p, _fast_expr_equal)
    except (_Reject, RecursionError, OverflowError, ValueError, ZeroDivisionError):
        return extracted, False
    if verdict is None:
        verdict = _symbolic_equal(g, p)
    return extracted, verdict


def is_correct(gold: str, response: str, dataset: str) -> bool:
    """True iff the response's final committed answer equals the gold (``dataset``: "gsm8k" or "math")."""
    return grade(gold, response, dataset)[1]
