"""The demo NLA's fitting corpus: docstrings of Python's own standard library, fixed and ordered, so
two builds on one Python version write the same files."""

from __future__ import annotations

import importlib
import inspect
import random

MODULES = [
    "abc",
    "argparse",
    "ast",
    "base64",
    "bisect",
    "calendar",
    "codecs",
    "collections",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "math",
    "mimetypes",
    "numbers",
    "operator",
    "os",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shutil",
    "statistics",
    "string",
    "struct",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "typing",
    "uuid",
    "zipfile",
]
MIN_CHARS, MAX_CHARS = 80, 400


def _first_paragraph(doc: str) -> str:
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def docstrings(count: int, seed: int = 0) -> list[str]:
    """`count` distinct first paragraphs of public stdlib docstrings, 80–400 characters each."""
    found: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if not isinstance(doc, str):
                continue
            text = _first_paragraph(doc)
            if MIN_CHARS <= len(text) <= MAX_CHARS and text not in found.values():
                found[f"{name}.{attr}"] = text
    texts = [found[k] for k in sorted(found)]
    random.Random(seed).shuffle(texts)
    return texts[:count]
