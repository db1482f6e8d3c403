"""One-screen errors for the ``synthmask`` console script (no Lightning import).

The project raises ValueError / KeyError / OSError subclasses with messages that say what is
wrong, where, and the fix. The console script prints that message alone and exits with status 1;
``--debug`` or ``SYNTHMASK_DEBUG=1`` keeps the full traceback. Parser errors (jsonargparse) are
shortened to the message a class raised, or to the option, the expected type and the given
value, instead of a Union error with a config dump. Ctrl-C prints what the command had saved
and exits with status 130. Checks that run before anything loads: config files (YAML syntax,
UTF-8) and the torch devices a config names.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import signal
import sys
import threading
import traceback
from argparse import ArgumentError
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import yaml
from PIL import UnidentifiedImageError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, ArgumentError)
DEBUG_HINT = "(full traceback: add --debug or set SYNTHMASK_DEBUG=1)"
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C
_DEBUG_VALUES = {"1", "true", "yes", "on"}


def debug_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("SYNTHMASK_DEBUG", "").strip().lower() in _DEBUG_VALUES


# ---- Ctrl-C ------------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command, carrying what the command had saved (``args[0]``)."""


@contextlib.contextmanager
def on_interrupt(saved: str) -> Iterator[None]:
    """Turn a Ctrl-C inside the block into :class:`Interrupted` saying ``saved`` (what is on
    disk and how a rerun resumes); an inner block's note wins."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as interrupt:
        raise Interrupted(saved) from interrupt


@contextlib.contextmanager
def exit_on_interrupt() -> Iterator[None]:
    """Ctrl-C while the command line's libraries load: one line and exit 130, no traceback.

    A signal handler, not ``except KeyboardInterrupt``: an import broken off half-way can
    leave a module half-initialized and fail with another error (numpy: RecursionError).
    Only in the main thread, and never where SIGINT is ignored (a background job)."""

    def exit_now(signum: int, frame: Any) -> None:
        sys.stderr.write("synthmask: interrupted (Ctrl-C) while starting; nothing was written.\n")
        sys.stderr.flush()
        os._exit(INTERRUPTED_EXIT_CODE)

    previous = None
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            previous = signal.signal(signal.SIGINT, exit_now)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def interrupted_message(interrupt: KeyboardInterrupt) -> str:
    if isinstance(interrupt, Interrupted) and interrupt.args:
        return f"synthmask: interrupted (Ctrl-C): {interrupt.args[0]}"
    return "synthmask: interrupted (Ctrl-C)."


# ---- messages ----------------------------------------------------------------------------------


def user_message(err: BaseException) -> str:
    """The message a user needs: the project's own text, with a hint for unreadable images,
    the file of a decode error, and parser errors shortened."""
    if isinstance(err, UnidentifiedImageError):
        return (
            f"{err}. The file is corrupt or not an image: replace it, or delete it together with "
            "its mask / image partner."
        )
    decode = _decode_error_message(err)
    if decode is not None:
        return decode
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) wraps the message in quotes
    text = str(err) or type(err).__name__
    if "Given value" in text or "Union subtypes" in text:
        text = short_parser_error(text)
    if isinstance(err, ArgumentError):
        text += " (`synthmask --help` lists the commands, `synthmask <command> --help` the options)"
    return text


def _decode_error_message(err: BaseException) -> str | None:
    """A UnicodeDecodeError (raised here or wrapped by the parser) with the file it read."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, UnicodeDecodeError):
            break
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, UnicodeDecodeError):
        return None
    if cause is not err and str(cause) not in str(err):
        return None  # wrapped in a message of the project's own, which says more
    where = _file_being_read(cause)
    what = f"{where} is" if where else "a text file this command reads is"
    return (
        f"{what} not {cause.encoding.upper()} text (byte 0x{cause.object[cause.start]:02x} at "
        f"position {cause.start} cannot be decoded); save it as UTF-8"
        + ("." if where else ", or add --debug to see which file it is.")
    )


def _file_being_read(err: BaseException) -> str | None:
    """The path of the file open in the innermost frame that has one (a ``Path`` or an open
    file object among its locals), e.g. ``Path.read_text``'s ``self``."""
    frames = [frame for frame, _ in traceback.walk_tb(err.__traceback__)]
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
            if isinstance(value, PurePath):
                return str(value)
    return None


# ---- parser errors -----------------------------------------------------------------------------

_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":?$')
_STRUCTURE = ("Does not validate", "Errors:", "Given value type", "Problem with given class_path")
_GENERIC = ("Expected a", "Not a valid subclass", "Import path ", "Does not validate")
_NONE = re.compile(r"^Expected a <class 'NoneType'>")
_TYPE = re.compile(r"^Expected an? (<class '[\w.]+'>|[\w.]+\[.*\])(?:\. Got value: (.*))?$")
_CLASS_PATH = ("Expected a dot import path", "Not a valid subclass", "Import path ")
_NESTED_VALUE = re.compile(r"NestedArg\(key='[^']*', val=(.*)\)$")


def _parse_parser_error(message: str) -> dict[str, Any]:
    """Leaves (key path, text) of a jsonargparse error, with the given value and the Union
    subtypes of each key path."""
    leaves: list[tuple[tuple[str, ...], str, int]] = []
    given: dict[tuple[str, ...], str] = {}
    subtypes: dict[tuple[str, ...], list[str]] = {}
    stack: list[tuple[int, str]] = []
    last_leaf_indent = -1
    for raw in message.splitlines():
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        bullet = text.startswith("- ")
        if bullet:
            text, indent = text[2:].strip(), indent + 2
        if text.startswith("Problem with given class_path") and not text.endswith(":"):
            text = text.split("':", 1)[-1].strip()  # 'Problem with given class_path X: <message>'
        while stack and stack[-1][0] >= indent:
            stack.pop()
        keys = tuple(key for _, key in stack)
        key = _PARSER_KEY.match(text)
        if key:
            stack.append((indent, key.group(1)))
            last_leaf_indent = -1
        elif text.startswith("Given value:"):
            given.setdefault(keys, text.removeprefix("Given value:").strip())
        elif text.startswith("Subtypes:"):
            subtypes[keys] = re.findall(r"<class '([\w.]+)'>", text)
        elif text.startswith(_STRUCTURE) or _NONE.match(text):
            last_leaf_indent = -1
        elif not bullet and leaves and 0 <= last_leaf_indent < indent:
            leaves[-1] = (leaves[-1][0], f"{leaves[-1][1]} {text}", leaves[-1][2])  # wrapped
        else:
            leaves.append((keys, text, indent))
            last_leaf_indent = indent
    return {"leaves": leaves, "given": given, "subtypes": subtypes}


def short_parser_error(message: str) -> str:
    """One line for a jsonargparse error: the message a class raised; else the option, the
    expected type and the given value; else, for a class-path option, the classes it takes."""
    parsed = _parse_parser_error(message)
    leaves, given = parsed["leaves"], parsed["given"]
    own = [text for _, text, _ in leaves if not text.startswith(_GENERIC)]
    if own:
        return own[-1]
    typed = [(keys, _TYPE.match(text)) for keys, text, _ in leaves]
    typed = [(keys, match) for keys, match in typed if match]
    if typed:
        keys = max((k for k, _ in typed), key=len)
        types = [_type_name(m.group(1)) for k, m in typed if k == keys]
        value = next((m.group(2) for k, m in typed if k == keys and m.group(2)), None)
        value = value if value is not None else _given_value(given.get(keys))
        got = f", got {value!r}" if value is not None else ""
        expected = " or ".join(f"{'an' if t[0] in 'aeiou' else 'a'} {t}" for t in types)
        return f"bad value for {_option(keys)}: expected {expected}{got}."
    class_paths = [(keys, text) for keys, text, _ in leaves if text.startswith(_CLASS_PATH)]
    if class_paths:
        keys = class_paths[-1][0]
        bases = [n for n in parsed["subtypes"].get(keys, []) if n != "NoneType"]
        value = _given_value(given.get(keys))
        if bases:
            names = subclass_names(bases[-1])
            choices = f": one of {', '.join(names)}" if names else ""
            return (
                f"bad value for {_option(keys)}: {value!r} is not a class it takes; give a "
                f"subclass of {bases[-1]}{choices} (its class name or dotted path)."
            )
    lines = [line for line in message.splitlines() if line.strip()]
    kept = [line for line in lines if not line.lstrip().lstrip("- ").startswith(_GENERIC)]
    return "\n".join((kept or lines)[:6])


def _option(keys: Sequence[str]) -> str:
    return ".".join(keys) or "an option"


def _type_name(text: str) -> str:
    match = re.fullmatch(r"<class '([\w.]+)'>", text)
    return match.group(1).rsplit(".", 1)[-1] if match else text


def _given_value(text: str | None) -> str | None:
    """The value a user gave, from a ``Given value:`` line (``NestedArg(... val='x')``)."""
    if text is None:
        return None
    nested = _NESTED_VALUE.match(text)
    if nested:
        text = nested.group(1)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text if len(text) <= 80 and not text.startswith("Namespace(") else None


def subclass_names(class_path: str) -> list[str]:
    """Names of the imported subclasses of ``class_path`` (not the class itself), sorted by
    where they are defined; [] when it cannot be imported."""
    module_name, _, name = class_path.rpartition(".")
    try:
        base = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return []
    found: list[type] = []
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop(0)
        if cls not in found and not cls.__name__.startswith("_"):
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls.__name__ for cls in found]


# ---- checks before anything loads --------------------------------------------------------------


def config_paths(argv: Sequence[str]) -> list[Path]:
    """The files given with ``--config`` / ``-c`` (either form: ``--config F``, ``--config=F``)."""
    paths = []
    for index, arg in enumerate(argv):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            paths.append(Path(argv[index + 1]))
        elif arg.startswith("--config="):
            paths.append(Path(arg.split("=", 1)[1]))
    return paths


def check_config_files(argv: Sequence[str]) -> None:
    """Read every ``--config`` file as UTF-8 YAML; an error names the file, line and column
    (the parser would name "<unicode string>"). Missing files are left to the parser."""
    for path in config_paths(argv):
        if not path.is_file():
            continue
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"config file {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at "
                f"position {err.start}); save it as UTF-8."
            ) from err
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
            tab = mark is not None and _char_at(path, mark.line, mark.column) == "\t"
            hint = " (a tab: YAML indents with spaces only)" if tab else ""
            raise ValueError(
                f"config file {path} is not valid YAML: {where}: {err.problem}{hint}; fix that "
                "line."
            ) from err
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path} is not valid YAML: {err}") from err


def _char_at(path: Path, line: int, column: int) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[line][column] if line < len(lines) and column < len(lines[line]) else ""


def check_devices(config: Mapping[str, Any], prefix: str = "") -> None:
    """Check every ``device`` and ``accelerator`` setting of a (nested) config before anything
    loads: a CUDA or MPS device this machine lacks is a ValueError naming the option and the fix."""
    for key, value in config.items():
        option = f"{prefix}.{key}" if prefix else str(key)
        if key == "device" and isinstance(value, str):
            check_device(value, option, config.get("dtype"))
        elif key == "accelerator" and isinstance(value, str):
            check_accelerator(value, option)
        elif isinstance(value, Mapping):
            check_devices(value, option)


def check_device(device: str, option: str, dtype: Any = None) -> None:
    """Raise ValueError unless torch can use ``device`` here (option: its dotted config key)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"--{option}={device!r} is not a torch device; give cpu, cuda, cuda:N or mps."
        ) from err
    dtype_option = option.rsplit(".", 1)[0] + ".dtype"
    cpu_fix = f"--{option}=cpu" + (
        f" --{dtype_option}=float32" if dtype not in (None, "float32") else ""
    )
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else " (this torch is built without CUDA)"
            raise ValueError(
                f"--{option}={device} but this machine has no CUDA GPU{build}; pass {cpu_fix} "
                "to run on the CPU, or run on a machine with a GPU."
            )
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"--{option}={device} but this machine has {count} CUDA GPU(s), "
                f"cuda:0..cuda:{count - 1}; pick one of those, or pass --{option}=cuda."
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--{option}=mps but MPS is not available here; pass {cpu_fix}.")


def check_accelerator(accelerator: str, option: str) -> None:
    """Raise ValueError if a Lightning ``accelerator`` names a GPU this machine lacks."""
    import torch

    name = accelerator.lower()
    if name in ("gpu", "cuda") and not (torch.cuda.is_available() and torch.cuda.device_count()):
        build = "" if torch.version.cuda else " (this torch is built without CUDA)"
        raise ValueError(
            f"--{option}={accelerator} but this machine has no CUDA GPU{build}; pass "
            f"--{option}=cpu (or auto) to train on the CPU, or run on a machine with a GPU."
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--{option}=mps but MPS is not available here; pass --{option}=cpu.")


# ---- the console script ------------------------------------------------------------------------


def run_with_user_errors(main: Callable[[], Any], debug: bool = False) -> None:
    """Run ``main``; on a user error print ``synthmask: error: <message>`` and exit 1; on Ctrl-C
    print what was saved and exit 130."""
    if debug_requested(debug):
        main()
        return
    try:
        main()
    except KeyboardInterrupt as interrupt:
        print(interrupted_message(interrupt), file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except USER_ERRORS as err:
        print(f"synthmask: error: {user_message(err)}\n{DEBUG_HINT}", file=sys.stderr)
        sys.exit(1)
    except SystemExit:
        raise
    except Exception:  # an unexpected failure: keep the traceback, it is a bug to report
        traceback.print_exc()
        sys.exit(1)
