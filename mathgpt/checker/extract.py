"""Extraction: where the model's final committed answer is, and the answer part of a gold.

Extraction takes the last *committed* answer (``#### N``, ``\\boxed{}``, "the answer is", markdown bold on
the last line); in flexible mode it falls back to a bare-answer response or a concluding last sentence with
one answer in it, never to "the last number in the text". Strict mode keeps only the configured answer
formats (``#### N``, ``\\boxed{}``, "the answer is N").
"""

from __future__ import annotations

import re

from mathgpt.checker.compare import _equal, _fast_expr_equal
from mathgpt.checker.grammar import MAX_ANSWER_CHARS, MAX_DEPTH, MAX_RESPONSE_CHARS, _Reject
from mathgpt.checker.parse import parse_answer
from mathgpt.config import ConfigError

DATASETS = ("gsm8k", "math")
MODES = ("flexible", "strict")


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown checker dataset {dataset!r} (expected one of {', '.join(DATASETS)})")


# Every pattern here runs on up to MAX_RESPONSE_CHARS of model output, so each is linear-time by construction:
# no two quantifiers in a row that can match the same characters (``\s*\d*\s*``, ``\s*,?\s+``), since a run
# of such characters is then re-split at every offset (cubic in 1,000 spaces). tests/test_checker_hostile.py
# runs every module-level pattern on long runs.
_CONTINUATION = re.compile(
    r"\n[ \t]*(?:question|problem|exercise|q|human|user|###[ \t]*instruction)[ \t]*(?:\d+[ \t]*)?[:.]", re.I
)
# "17\nExplanation: ...": a response that opens with its answer on a line of its own (policy answer_first).
_EXPLAINS = re.compile(r"(?:explanation|reasoning|solution)[ \t]*:", re.I)
_PHRASE = re.compile(
    r"(?:final\s+answer|\banswer)[\s*]*(?:is|was|would\s+be|will\s+be|should\s+be|[:=])[\s*:]*", re.I
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BARE_TOKEN = re.compile(rf"[^\s$]{{1,{MAX_ANSWER_CHARS}}}")  # \boxed 5
_HASH = re.compile(r"####[ \t]*([^\n]*)")
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
_NUMBER = re.compile(r"-?\d+\s*/\s*\d+(?!\d|\.\d)|-?\$?\d[\d,]*(?:\.\d+)?%?|-?\$?\.\d+%?")
# "The center is $(1, -2)$.": a complete closing statement of one value, without a conclusion word.
_STATED = re.compile(
    r"\b(?:is|are|equals|was|were)\s+(\$[^$]+\$|-?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?)\s*\.$"
)
# What may follow a stated answer without being part of it: a reason, a rejected alternative, a comparison.
# The lookbehind starts a match only at the first character of a run of spaces and commas (linear).
_TRAILING = re.compile(
    r"(?<![\s,])(?:\s*,)?\s+(?:which|because|since|as|so|rather\s+than|instead\s+of|not|compared|than|"
    r"versus|vs\.?|but|while|where|when)\b.*$",
    re.I | re.S,
)
_PAREN_OPEN = re.compile(r"(?<=\S)\s+\(")  # matched only from a run's first space: (?<=\S)
_TWO_LETTERS = re.compile(r"[a-zA-Z]{2}")
# "Final Answer: The largest $n$ is 34": an answer phrase that names the quantity first (policy named_value).
_NAMED = re.compile(r"(?:the|its|our)\s[^=]{0,80}?\b(?:is|are|equals)\s+(\S.{0,80})", re.I | re.S)
_PAREN = re.compile(r"(?<=\S)\s+\(.*$", re.S)  # gsm8k answers are numbers: any parenthetical trails


def _cut_worded_parenthetical(span: str) -> str:
    """The span up to its first parenthetical that holds a word ("18 (9 eggs x $2)" is 18); "(1, 2)" stays.

    Each "(" is checked up to the next ")"; the "(" before that ")" share its text, so they are skipped and
    every character is read once (a lookahead per "(" was quadratic in "( ( ( ...").
    """
    pos = 0
    while (m := _PAREN_OPEN.search(span, pos)) is not None:
        close = span.find(")", m.end())
        close = len(span) if close < 0 else close
        if _TWO_LETTERS.search(span, m.end(), close):
            return span[: m.start()]
        pos = close
    return span


# Boxes side by side ("$x = \boxed{-2}$, $x = \boxed{3}$", "\boxed{1} and \boxed{2}"): one answer, their set.
# Between them: punctuation, spacing, display delimiters, "and", a label (x_1 =); never "or" or other words.
_BOX_GAP = re.compile(
    r"(?:[\s$.,;]|\\[\[\]]|\\q?quad\b|\\[,;!]|\\text\{\s*(?:and|,)?\s*\}|\band\b|[a-zA-Z](?:_\{?\w+\}?)?\s*=)*"
)
# Chat-template tokens a model kept emitting after its answer ("... is 3/10. <|im_start|>user"): the turn ends
# at the first one (policy chat_tokens); leading ones (a template echoed before the answer) are skipped.
_CHAT_TOKEN = re.compile(
    r"<\|[A-Za-z_]{1,30}\|>|<\uff5c[^\uff5c>]{1,40}\uff5c>|</s>|<(?:end|start)_of_turn>|\[/?INST\]"
)
_LEADING_TOKENS = re.compile(r"(?:\s|" + _CHAT_TOKEN.pattern + r")*")
_SPAN_END = re.compile(r"\.(?=\s|$)|(?<!\\);")
# A closing line that is only a word or a letter in math mode: "$no$", "$C$", "$\text{prime}$" (text_answers).
_MATH_WORD = re.compile(r"\$\s*(?:[A-Z]|[A-Za-z]{2,12}|\\text\{[^{}$]{1,40}\})\s*\$\.?")
_BARE_MATH = re.compile(r"\$[^$\n]{1,78}\$")
# What may introduce a closing display block: "is:", "we get", a bare "Therefore" (policy equations); not
# "So we need to compute", which introduces a step.
_LEADS_TO_DISPLAY = re.compile(r"(?::|\b(?:is|are|be|equals|get|obtain|have))\s*$", re.I)
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
    if rest.startswith("$") and "\n" in rest[: max(0, rest.find("$", 1))]:  # inline math over several lines
        return rest[: rest.find("$", 1) + 1]
    line = rest.split("\n", 1)[0]
    depth, dollars, last = 0, 0, 0
    for m in _SPAN_END.finditer(line):  # a ";" inside brackets or math separates items: (1;0;4), $a; b$
        seg = line[last : m.start()]
        depth += sum(seg.count(c) for c in "([{") - sum(seg.count(c) for c in ")]}")
        dollars += seg.count("$")
        last = m.start()
        if m.group(0) == "." or depth <= 0 and dollars % 2 == 0:
            return line[: m.start()].strip()
    return line.strip()


def _candidates(text: str) -> list[tuple[int, int, str, str]]:
    """Committed answers as (start, end, kind, span), in no particular order."""
    found = []
    for m in _HASH.finditer(text):
        found.append((m.start(), m.end(), "hash", m.group(1).strip()))
    for m in _BOXED.finditer(text):
        if m.end() < len(text) and text[m.end()] == "{":
            got = _braced(text, m.end())
            span, end = got if got else (text[m.end() : m.end() + 40], len(text))
        else:  # \boxed 5
            token = _BARE_TOKEN.match(text, m.end())
            span, end = (token.group(0), token.end()) if token else ("", m.end())
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
    if _HEDGE.search(sentence):
        return None
    if not _CONCLUSION.match(sentence):
        stated = _STATED.search(sentence)
        return stated.group(1).strip() if stated else None
    inline = re.findall(r"\$([^$]+)\$", sentence)
    closing = sentence.rstrip()
    closing = closing[:-1] if closing.endswith((".", "!")) else closing
    at_end = bool(inline) and closing.rstrip().endswith("$")
    tail = inline[-1] if inline and ("\\" in inline[-1] or at_end) else sentence
    if at_end:  # "So, the ordered pair is $(7, 6)$.": the closing math is the answer
        return tail.strip()
    tail = tail.rsplit("=", 1)[-1]
    if "\\" in tail:  # LaTeX math in the final sentence: take it whole
        return tail.strip(" .")
    numbers = _NUMBER.findall(tail)
    return numbers[0].rstrip(",") if len(numbers) == 1 else None


def extract_answer(response: str, dataset: str, *, mode: str = "flexible") -> str | None:
    """The model's final committed answer as written (e.g. ``"$18"``, ``"\\frac{1}{2}"``), or None.

    None means "no answer": nothing committed, a hedge between answers, or an unsafe fallback.
    """
    _check_dataset(dataset)
    if not isinstance(response, str):
        return None
    start = _LEADING_TOKENS.match(response).end()  # type: ignore[union-attr]  # (?:...)* always matches
    turn_end = _CHAT_TOKEN.search(response, start)
    response = response[start : turn_end.start() if turn_end else len(response)]
    text = response.rstrip()[-MAX_RESPONSE_CHARS:].replace("\r", "")  # trailing blanks would fill the tail
    cut = _CONTINUATION.search(text)
    if cut and text[: cut.start()].strip():  # a base model that goes on to invent the next question
        text = text[: cut.start()]
    found = sorted(_candidates(text))
    if mode == "strict":  # only the configured answer formats count
        found = [f for f in found if f[2] in ("hash", "boxed", "phrase")]
    if found:
        start, _, kind, span = found[-1]
        gap = text[found[-2][1] : start] if len(found) > 1 else ""
        if re.fullmatch(r"[\s$.,]*or[\s$]*", gap, re.I) and not _same_value(found[-2][3], span, dataset):
            return None  # "\boxed{5} or \boxed{6}" hedges; "\boxed{1.5} or \boxed{\frac32}" does not
        if kind != "boxed" and _HEDGE.search(re.sub(r"\\text\{[^}]*\}", "", span)):
            return None  # "the answer is 5 or 6"
        if kind == "boxed":
            side_by_side = [span]
            for (_, prev_end, prev_kind, prev_span), (next_start, *_) in zip(
                found[-2::-1], found[:0:-1], strict=False
            ):
                gap = text[prev_end:next_start]
                if prev_kind != "boxed" or len(gap) > 40 or not _BOX_GAP.fullmatch(gap):
                    break
                side_by_side.insert(0, prev_span)
            span = ", ".join(side_by_side)
        else:  # "The answer is 35, not 30." / "#### 40 (20 + 20)"
            span = _PAREN.sub("", span.strip()) if dataset == "gsm8k" else _cut_worded_parenthetical(span)
            span = _TRAILING.sub("", span)
            if named := _NAMED.fullmatch(span.strip()):
                span = named.group(1)
        span = span.strip().strip("*").strip()
        if inline := re.fullmatch(r"\$+([^$]+)\$+", span):  # "$\frac{1}{2}$" reads as \frac{1}{2}
            span = inline.group(1).strip()
        return span or None
    if mode == "strict":
        return None
    stripped = text.strip().rstrip(".").strip()
    if _is_bare_answer(stripped) or _BARE_MATH.fullmatch(stripped):
        return stripped
    last_line = stripped.rsplit("\n", 1)[-1].strip()
    if _MATH_WORD.fullmatch(last_line):
        return last_line.strip(".$ ")
    if block := _closing_display(stripped):
        return block
    first, _, rest = text.strip().partition("\n")
    if _EXPLAINS.match(rest.lstrip()) and _is_bare_answer(first.strip().rstrip(".").strip()):
        return first.strip().rstrip(".").strip()
    return _conclusion_answer(text)


def _closing_display(text: str) -> str | None:
    """The display block ending a response, when the sentence before it concludes ("Therefore\\n\\[g(t) = 2t\\]")."""
    for open_, close in (("\\[", "\\]"), ("$$", "$$")):
        if text.endswith(close):
            start = text.rfind(open_, 0, len(text) - len(close))
            if start < 0:
                return None
            block = text[start + len(open_) : len(text) - len(close)].strip()
            before = re.split(r"[.\n]", text[:start].rstrip())[-1].strip()
            leads = _LEADS_TO_DISPLAY.search(before) or _CONCLUSION.fullmatch(before.rstrip(",:; "))
            return block if leads and block and not _HEDGE.search(block) else None
    return None


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
