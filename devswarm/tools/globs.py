"""Globs the model writes (`**`, `*`, `?`, `[...]`, `{a,b}`), matched against relative paths."""

from __future__ import annotations

import os
import re
from collections.abc import Callable


def _glob_regex(pattern: str) -> str:
    """Translate a glob (`**`, `*`, `?`, `[...]`, `{a,b}`) to a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        elif c == "{" and (j := pattern.find("}", i)) > i:
            alternatives = pattern[i + 1 : j].split(",")
            out.append("(?:" + "|".join(_glob_regex(a) for a in alternatives) + ")")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A test for relative paths: a pattern without `/` matches the file name at any depth
    (like .gitignore); one with `/` matches the whole path relative to the searched folder."""
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if not pattern:
        return lambda _rel: True
    regex = re.compile(_glob_regex(pattern) + r"\Z", re.DOTALL)
    if "/" in pattern:
        return lambda rel: regex.match(rel) is not None
    return lambda rel: regex.match(rel.rsplit("/", 1)[-1]) is not None


def glob_under(base: str, pattern: str) -> Callable[[str], bool]:
    """A test for paths relative to the root, matching `pattern` against the path relative to
    the searched folder `base` ('.' for the root; a searched file is matched by its name)."""
    matches = glob_matcher(pattern)

    def wanted(rel: str) -> bool:
        inner = rel if base == "." or rel == base else rel[len(base) + 1 :]
        return matches(inner if rel != base else os.path.basename(rel))

    return wanted
