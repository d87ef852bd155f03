"""Errors the user can act on. Every one names the input, the value and what is allowed."""


class WanInputError(ValueError):
    """A parameter, file or option given by the user is not usable."""


def check_range(name: str, value, low, high):
    """Return value if low <= value <= high, else raise WanInputError naming it."""
    if value is None or not (low <= value <= high):
        raise WanInputError(f"{name}={value!r} is out of range: allowed {low} to {high}")
    return value


def check_choice(name: str, value, allowed):
    """Return value if it is one of allowed, else raise WanInputError listing them."""
    if value not in allowed:
        raise WanInputError(f"{name}={value!r} is not allowed: choose one of {', '.join(map(str, allowed))}")
    return value
