"""TOML text: a config file read (each failure one ConfigError naming the file),
and a value written as TOML writes it. The standard library's tomllib reads."""

import stat
import tomllib
from pathlib import Path
from typing import Any

from linfit.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: give the path of a .toml file"
                          ) from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    if not stat.S_ISREG(mode):  # and never opened: a pipe would block
        what = "is a directory" if stat.S_ISDIR(mode) else \
            "is not a regular file (a device or a pipe)"
        raise ConfigError(f"config file {path} {what}: give the path of a .toml file")
    try:
        # A byte-order mark (Notepad's UTF-8) is no TOML statement: read past it.
        return tomllib.loads(path.read_bytes().decode().removeprefix("\ufeff"))
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file: give a TOML config") from None


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a basic string: escaped as TOML reads it back
        return '"' + "".join(_ESCAPES.get(c, c if c.isprintable() else _escaped(c))
                             for c in value) + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _escaped(character: str) -> str:
    code = ord(character)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
