"""Offline text corpora: for SAE training and for the statistics of ordinary activations.

The default corpus is **the prose of the Python standard library's docstrings plus the fact
set's texts**. Why: an SAE must see the model's ordinary activation distribution, not only the
handful of fact prompts it will later be asked about, and the workbench cannot download a web
corpus. The standard library ships with every Python install, so its docstrings are always
there, offline and identical on every machine; they hold tens of thousands of sentences of plain
technical English (a few hundred thousand tokens after filtering out code and doctest lines).
They are read with `ast` from the library's source files, not by importing the modules (importing
some of them has side effects, e.g. `antigravity` opens a browser). The facts (prompts with
their answers, and every paraphrase) are mixed in so that the features the workbench later looks
for, those of the forget facts, are in distribution. A user who has a better corpus passes it
with `--corpus FILE` (one text per line).
"""

from __future__ import annotations

import ast
import functools
import random
import re
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.facts import FactSet
from workbench.inputs import read_text

_CODE_HINTS = re.compile(r">>>|\.\.\. |::|[{}\[\]=<>|\\_]|\(\)|^\s*[-*=+#]", re.M)


def _docstrings(tree: ast.AST) -> Iterable[str]:
    nodes = [tree] + [n for n in ast.walk(tree)
                      if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    for node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            yield doc


def _prose_paragraphs(doc: str, min_chars: int) -> Iterable[str]:
    """Paragraphs of a docstring that read as English sentences (no code, tables or lists)."""
    for para in re.split(r"\n\s*\n", doc):
        if _CODE_HINTS.search(para):
            continue
        text = " ".join(para.split())
        letters = sum(c.isalpha() or c == " " for c in text)
        if len(text) >= min_chars and letters >= 0.9 * len(text) and text[0].isupper():
            yield text


def stdlib_prose(min_chars: int = 80, limit: int | None = None) -> list[str]:
    """English prose paragraphs from the standard library's docstrings, in a fixed order.

    Deterministic for a given Python version: files are visited in sorted order and paragraphs
    de-duplicated. Nothing is imported or downloaded. Parsed once per process (cached)."""
    return list(_stdlib_prose(min_chars)[:limit])


@functools.lru_cache(maxsize=4)
def _stdlib_prose(min_chars: int) -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "lib2to3", "site-packages", "dist-packages", "tkinter", "turtledemo")
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(part in skip or part.startswith("test") for part in rel):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for doc in _docstrings(tree):
            for para in _prose_paragraphs(doc, min_chars):
                if para not in seen:
                    seen.add(para)
                    out.append(para)
    if not out:
        raise WorkbenchError(f"no docstring prose found under the standard library at {root}")
    return tuple(out)


def readable_prose(tokenizer, limit: int | None = None, max_chars: int | None = None
                   ) -> list[str]:
    """`stdlib_prose(limit=limit)` (each cut to `max_chars`), or [] when `tokenizer` cannot read
    English (more than 5% unknown tokens on a sample, e.g. the toy world's word-level vocabulary)."""
    prose = stdlib_prose(limit=limit)
    if max_chars:
        prose = [t[:max_chars] for t in prose]
    unk = tokenizer.unk_token_id
    if unk is None or not prose:
        return prose
    ids = [i for t in prose[:20] for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    return prose if ids and sum(i == unk for i in ids) / len(ids) < 0.05 else []


def fact_texts(facts: FactSet) -> list[str]:
    """Every phrasing of every fact, completed by its answer."""
    return [p + f.answer for f in facts for p in (f.prompt, *f.paraphrases)]


def read_corpus(path: str | Path) -> list[str]:
    """A user corpus: one text per line (blank lines skipped)."""
    path = Path(path)
    lines = read_text(path).splitlines()
    texts = [ln.strip() for ln in lines if ln.strip()]
    if not texts:
        raise WorkbenchError(f"corpus file {path} has no text")
    return texts


def default_corpus(facts: FactSet | None = None, seed: int = 0,
                   limit: int | None = None) -> list[str]:
    """Standard-library prose plus the facts' texts, shuffled deterministically by `seed`."""
    texts = stdlib_prose(limit=limit)
    if facts is not None:
        texts = texts + fact_texts(facts)
    rng = random.Random(seed)
    rng.shuffle(texts)
    return texts


def pack_texts(texts: Sequence[str], max_chars: int = 600) -> list[str]:
    """Join consecutive short texts (with a space) into chunks of up to `max_chars` characters.

    Docstring paragraphs are much shorter than that; packed, the SAE sees activations at the
    positions ordinary text reaches and a batch wastes little on padding. Longer texts stay
    whole (the capture cuts them)."""
    out: list[str] = []
    cur = ""
    for t in texts:
        t = t.strip()
        if not t:
            continue
        if cur and len(cur) + 1 + len(t) > max_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur} {t}" if cur else t
    if cur:
        out.append(cur)
    return out


def split_held_out(texts: Sequence[str], frac: float = 0.05, min_eval: int = 8,
                   max_eval: int = 96) -> tuple[list[str], list[str]]:
    """(train, held-out): the held-out part is the last `frac` of the texts (bounded)."""
    if len(texts) < 2:
        raise WorkbenchError(f"a corpus needs at least 2 texts, got {len(texts)}")
    n_eval = min(max_eval, max(min_eval, int(len(texts) * frac)), len(texts) // 2)
    return list(texts[:-n_eval]), list(texts[-n_eval:])
