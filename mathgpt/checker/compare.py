"""Comparison: exact rationals in process; anything symbolic is decided by sympy in the bounded worker.

``_equal`` walks two parsed values (sets by bipartite matching, tuples, intervals, matrices) and asks an
expression comparator at the leaves: ``_fast_expr_equal`` in process (True/False, or None = "needs sympy"),
``_sympy_expr_equal`` inside the worker subprocess (see ``pool.py``), which is the only place sympy runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from mathgpt.checker.grammar import MAX_EXPONENT, MAX_RESULT_DIGITS, Node, _Reject

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


MIN_DECIMAL_DIGITS = 6  # significant digits a decimal needs to stand for a non-terminating value
_LONG_DECIMAL = re.compile(r"-?(\d*)\.(\d+)")


def precise_decimal(pred: Node, pred_text: str) -> Node:
    """A decimal answer of 6+ significant digits as ("approx", value, places) (policy long_decimals).

    It then equals a rational gold whose decimal expansion does not terminate (1/7, 2/3) when it is that value
    rounded or truncated at its last written place; against a terminating gold (3, 0.125) it must be exact, and
    against an irrational one (pi, sqrt 2) it is an approximation, not the value: wrong.
    """
    m = _LONG_DECIMAL.fullmatch(pred_text.strip().strip("$").strip())
    if not m or pred[0] != "expr" or len((m[1] + m[2]).lstrip("0")) < MIN_DECIMAL_DIGITS:
        return pred
    return ("expr", ("approx", pred[1], len(m[2])))


def _rounded_or_truncated(value: Fraction, places: int) -> tuple[int, int]:
    scaled = value * 10**places
    sign = -1 if scaled < 0 else 1
    return sign * math.floor(abs(scaled) + Fraction(1, 2)), math.trunc(scaled)


def _approx_equal(other: Node, approx: Node) -> bool:
    """A long decimal against an exact value (``precise_decimal``)."""
    written = _exact(approx[1])
    assert written is not None  # a decimal literal
    places = approx[2]
    try:
        exact = _exact(other)
    except _Reject:
        return False
    if exact is None:  # pi, sqrt 2, a symbol
        return False
    if _terminates(exact):
        return written == exact
    return written * 10**places in _rounded_or_truncated(exact, places)


def _terminates(v: Fraction) -> bool:
    d = v.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _fast_expr_equal(a: Node, b: Node, equation: bool) -> bool | None:
    """In-process verdict for rational numbers and identical trees; None when sympy must decide."""
    if a[0] == "approx" or b[0] == "approx":
        return _approx_equal(a, b) if b[0] == "approx" else _approx_equal(b, a)
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


def _distinct(items: list[Node], cmp: ExprCmp) -> tuple[list[Node], bool]:
    """The items without repeats (a solution set lists each value once), and whether any pair was undecided."""
    kept: list[Node] = []
    undecided = False
    for item in items:
        same = [_equal(k, item, cmp) for k in kept]
        undecided = undecided or None in same
        if True not in same:
            kept.append(item)
    return kept, undecided


def _matching(xs: list[Node], ys: list[Node], cmp: ExprCmp) -> bool | None:
    """Set equality under ``_equal``: repeats dropped, then every element matched once (a bipartite matching)."""
    xs, x_open = _distinct(xs, cmp)
    ys, y_open = _distinct(ys, cmp)
    if len(xs) != len(ys):  # unless two items might still be one value, which only sympy can tell
        return None if x_open or y_open else False
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


def _labelled(a: Node, b: Node, cmp: ExprCmp) -> bool | None:
    """Labelled values ("PQ = 2, RS = 9") against labelled ones by name, against a bare list in order."""
    if a[0] != "labels":
        a, b = b, a
    if b[0] == "labels":
        names_a, names_b = dict(a[1:]), dict(b[1:])
        if set(names_a) != set(names_b):
            return False  # a wrong label is a wrong answer
        return _all([_equal(names_a[n], names_b[n], cmp) for n in names_a])
    if b[0] not in ("tuple", "set") or len(b) != len(a):
        return False
    return _all([_equal(value, item, cmp) for (_, value), item in zip(a[1:], b[1:], strict=True)])


def _equal(a: Node, b: Node, cmp: ExprCmp) -> bool | None:
    ka, kb = a[0], b[0]
    if "labels" in (ka, kb):
        return _labelled(a, b, cmp)
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
    if ka == "ratio":
        return _all([_equal(a[1], b[1], cmp), _equal(a[2], b[2], cmp)])
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

    if x[0] == "approx" or y[0] == "approx":
        return _approx_equal(x, y) if y[0] == "approx" else _approx_equal(y, x)
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


def _symbolic(node: Node) -> bool:
    if node[0] in ("sym", "base"):
        return True
    return any(isinstance(c, (tuple, list)) and _symbolic(c) for c in node[1:])


def adjust_prediction(gold: Node, pred: Node) -> Node:
    """An equation answering a number-valued question is read as its right side ("a + b = 10" for 10).

    Only when the gold is not an equation itself and the right side is a constant (policy: docs/CHECKER.md).
    """
    if pred[0] == "eq" and gold[0] != "eq" and not _symbolic(pred[2]):
        return ("expr", pred[2])
    return pred


_PERCENT = ("%", "percent")


def percent_variants(gold: Node, pred: Node, gold_text: str, pred_text: str) -> list[tuple[Node, Node]]:
    """The (gold, pred) pairs to try: a percentage "p%" stands for p/100 (policy percent).

    It is also read as the bare number p (gold 25 for "what percent ...?") unless the other side is a number
    strictly between -1 and 1, where "0.25%" against gold 0.25 would be a false positive.
    """
    pred_pct = any(p in pred_text for p in _PERCENT)
    gold_pct = any(p in gold_text for p in _PERCENT)
    if pred_pct == gold_pct or pred[0] != "expr" or gold[0] != "expr":
        return [(gold, pred)]

    def hundredth(node: Node) -> Node:
        return ("expr", ("div", node[1], ("num", 100, 1)))

    other = _exact_or_none(gold[1] if pred_pct else pred[1])
    pairs = [(gold, hundredth(pred)) if pred_pct else (hundredth(gold), pred)]
    if other is None or abs(other) >= 1:
        pairs.append((gold, pred))
    return pairs


def _exact_or_none(node: Node) -> Fraction | None:
    try:
        return _exact(node)
    except _Reject:
        return None
