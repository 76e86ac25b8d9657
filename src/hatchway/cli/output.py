"""Output for humans (rich) or machines (``--json``: exactly one JSON object on stdout).

Human output shows strings that devices, users and clients chose (device ids,
payloads, device names, usernames). Printed raw, a C1 control such as U+009B
(CSI) drives the operator's terminal and a bidi override such as U+202E makes
text read backwards, so :func:`terminal_safe` escapes every such character and
:func:`shown` also escapes rich markup; ``--json`` output stays exact.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.markup import escape

from hatchway.errors import ConfigurationError, HatchwayError


class _Console(Console):
    """Word-wraps for a terminal only: piped output keeps each sentence on one line.

    rich wraps at 80 columns when stdout is not a terminal, which splits narration
    mid-sentence in logs and for ``grep``; a terminal still gets wrapped text.
    """

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:
        if soft_wrap is None:
            soft_wrap = not self.is_terminal
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


# emoji=False: ":name:" in a device-chosen string must stay text, not become an emoji.
console: Console = _Console(emoji=False)
err_console: Console = _Console(stderr=True, emoji=False)


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal would not show as itself escaped.

    That is every character ``str.isprintable`` refuses: C0 and C1 controls
    (including ESC, CSI U+009B, newline and tab), DEL, bidi embeddings, overrides,
    isolates and marks (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), the
    other invisible format characters (zero-width space and joiners, U+FEFF, tag
    characters), line and paragraph separators, spaces other than U+0020, lone
    surrogates, and unassigned or private-use code points. Each becomes
    ``\\uXXXX`` as in JSON (a UTF-16 surrogate pair above the BMP), so escaped text
    stays valid inside a JSON string.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    point = ord(c)
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    point -= 0x10000
    return f"\\u{0xD800 | point >> 10:04x}\\u{0xDC00 | point & 0x3FF:04x}"


def shown(value: object) -> str:
    """``value`` as text for rich markup: terminal-safe, with ``[`` markup escaped."""
    return escape(terminal_safe(str(value)))


def print_json_safe(data: Any) -> None:
    """Pretty, highlighted JSON for humans, every string passed through :func:`terminal_safe`.

    ``console.print_json`` would decode ``\\u009b`` back into the raw character.
    JSON already escapes C0 controls inside strings, so the only raw newlines are
    the indentation's; each line is escaped on its own (``str.splitlines`` would
    also split on U+0085 and U+2028, which must be escaped instead).
    """
    dumped = json.dumps(data, indent=2, ensure_ascii=False)
    text = JSONHighlighter()("\n".join(terminal_safe(line) for line in dumped.split("\n")))
    text.no_wrap = True
    text.overflow = None
    console.print(text)


def emit(as_json: bool, data: dict[str, Any], human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    else:
        human()


def fail(as_json: bool, message: str, *, code: int = 1) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    else:
        err_console.print(f"[bold red]error:[/] {shown(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors_reported(as_json: bool) -> Iterator[None]:
    """Turn expected failures into a clear one-line message and a non-zero exit code."""
    try:
        yield
    except (ConfigurationError, ValueError) as exc:
        fail(as_json, str(exc), code=2)
    except HatchwayError as exc:
        fail(as_json, str(exc) or type(exc).__name__)
    except OSError as exc:
        fail(as_json, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, like '{{\"kwh\": 12.5}}'")
    return value
