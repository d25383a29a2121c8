"""The one exception for a user's mistake in a config."""


class ConfigError(ValueError):
    """A config value that gradexp cannot run with. Its message is one line that names the key,
    the value and what is allowed, so the CLI can print it as is."""

    def __init__(self, key: str, value: object, problem: str, allowed: str | None = None):
        self.key, self.value, self.problem, self.allowed = key, value, problem, allowed
        shown = _show(value)
        message = f"{key}={shown}: {problem}" if shown is not None else f"{key}: {problem}"
        super().__init__(message + (f"; allowed: {allowed}" if allowed else ""))


LONGEST_SHOWN = 40  # characters of a value shown whole; a longer one is shown by its ends


def _show(value: object) -> str | None:
    if value is _NO_VALUE:
        return None
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)  # config integers have at most 4300 digits: Python's parser refuses more
    if len(text) > LONGEST_SHOWN:
        return f"{text[:12]}...{text[-12:]} ({len(text)} characters)"
    if isinstance(value, str) and _reads_as_non_string(value):
        return repr(value)  # the string 'null' is not null: show which one the user gave
    return text


def _reads_as_non_string(text: str) -> bool:
    if text in ("", "null", "true", "false"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


_NO_VALUE = object()
NO_VALUE = _NO_VALUE  # for problems that concern a key rather than its value


def first_line(error: BaseException, typed: bool = False) -> str:
    """An exception's message cut to its first line (its type's name when it has none): what a
    one-line error may quote of a library's own error. `typed`: after its type's name, for a
    user's own code, whose error may say little without it (`KeyError: 'width'`)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text.splitlines()[0]}" if typed else text.splitlines()[0]
