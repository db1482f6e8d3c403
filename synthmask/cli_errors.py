"""One-screen errors for the ``synthmask`` console script (no Lightning import).

The project raises ValueError / KeyError / OSError subclasses with messages that say what is
wrong, where, and the fix. The console script prints that message alone and exits with status 1;
``--debug`` or ``SYNTHMASK_DEBUG=1`` keeps the full traceback. Parser errors (jsonargparse) are
shortened to the innermost message a class raised, instead of a Union error with a config dump.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from argparse import ArgumentError
from collections.abc import Callable
from typing import Any

from PIL import UnidentifiedImageError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, ArgumentError)
DEBUG_HINT = "(full traceback: add --debug or set SYNTHMASK_DEBUG=1)"
_DEBUG_VALUES = {"1", "true", "yes", "on"}


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("SYNTHMASK_DEBUG", "").strip().lower() in _DEBUG_VALUES


def user_message(err: BaseException) -> str:
    """The message a user needs: the project's own text, with a hint for unreadable images."""
    if isinstance(err, UnidentifiedImageError):
        return (
            f"{err}. The file is corrupt or not an image: replace it, or delete it together with "
            "its mask / image partner."
        )
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) wraps the message in quotes
    text = str(err) or type(err).__name__
    if "Given value" in text or "Union subtypes" in text:
        text = short_parser_error(text)
    if isinstance(err, ArgumentError):
        text += " (`synthmask --help` lists the commands, `synthmask <command> --help` the options)"
    return text


_BULLET = re.compile(r"^\s*- (.*)$")
_NOISE = ("Expected a ", "Given value", "Not a valid subclass", "Import path ", "Does not validate")


def short_parser_error(message: str) -> str:
    """The project's message inside a jsonargparse error: a Union error lists what each
    candidate type raised (``  - <message>`` and its indented lines); keep the one a class
    raised, drop the type list and the config dump."""
    items: list[str] = []
    for line in message.splitlines():
        bullet = _BULLET.match(line)
        if bullet:
            items.append(bullet.group(1).strip())
        elif items and line.startswith("      ") and not line.strip().startswith(_NOISE):
            items[-1] = f"{items[-1]} {line.strip()}"
    # An item ending in ":" only heads nested bullets (e.g. 'Problem with given class_path X:').
    meaningful = [i for i in items if i and not i.startswith(_NOISE) and not i.endswith(":")]
    if meaningful:
        return meaningful[-1].replace("Problem with given class_path ", "")
    keys = re.findall(r'Parser key "([^"]+)"', message)
    subtypes = re.findall(
        r"<class '([\w.]+)'>", " ".join(re.findall(r"Subtypes: \[.*?\]", message))
    )
    wanted = [name for name in subtypes if name != "NoneType"]
    given = [item for item in items if item.startswith("Expected a ") and "NoneType" not in item]
    if keys and wanted and given:
        return (
            f"bad value for {'.'.join(keys)}: {given[-1]}; give a subclass of {wanted[-1]} "
            "(its class name or dotted path)."
        )
    lines = [line for line in message.splitlines() if line.strip()]
    kept = [line for line in lines if not line.lstrip().startswith(_NOISE)]
    return "\n".join((kept or lines)[:6])


def run_with_user_errors(main: Callable[[], Any], debug: bool = False) -> None:
    """Run ``main``; on a user error print ``synthmask: error: <message>`` and exit 1."""
    if debug_requested(debug):
        main()
        return
    try:
        main()
    except USER_ERRORS as err:
        print(f"synthmask: error: {user_message(err)}\n{DEBUG_HINT}", file=sys.stderr)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception:  # an unexpected failure: keep the traceback, it is a bug to report
        traceback.print_exc()
        sys.exit(1)
