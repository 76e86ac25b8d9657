"""Output for humans (rich) or machines (``--json``: exactly one JSON object on stdout)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from hatchway.errors import ConfigurationError, HatchwayError

console = Console()
err_console = Console(stderr=True)


def emit(as_json: bool, data: dict[str, Any], human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    else:
        human()


def fail(as_json: bool, message: str, *, code: int = 1) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
    else:
        # Messages are plain text: "pip install 'hatchway[redis]'" must not read as markup.
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
