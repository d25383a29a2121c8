"""The small checks every config rule is made of, each raising one ConfigError that names the
key, the value and what is allowed. Model modules use them for their own keys."""

from gradexp.config.errors import ConfigError


def choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(key, value, "no such choice", ", ".join(sorted(choices)))


def require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, "out of range", allowed)


def at_least(c, group: str, key: str, low) -> None:
    value = getattr(getattr(c, group), key)
    kind = "an integer" if isinstance(low, int) else "a number"
    require(value >= low, f"{group}.{key}", value, f"{kind} >= {low}")


def positive(c, group: str, key: str, nullable: bool = False) -> None:
    value = getattr(getattr(c, group), key)
    if value is None and nullable:
        return
    require(
        value is not None and value > 0,
        f"{group}.{key}",
        value,
        "a number > 0" + (" or null" if nullable else ""),
    )


def fraction(c, group: str, key: str) -> None:
    value = getattr(getattr(c, group), key)
    require(0 <= value < 1, f"{group}.{key}", value, "a number in [0, 1)")
