"""Word options as typed on a Hydra command line or in a YAML file.

Hydra and OmegaConf read some words as YAML scalars before the code sees them: ``true``/``false``
(any case) become booleans, ``null`` becomes None, ``on``/``off``/``yes``/``no`` in a YAML file
become booleans, and digits become numbers. An option whose valid values include such a word
(``roi.test_centres=predicted|true``, ``postprocess.tta=auto|true|false``) must take the parsed
value back to its word, or ``roi_centres=true`` fails as "True is not one of predicted, true".
:func:`word` is that one normaliser, used by every such option.
"""

from __future__ import annotations

from collections.abc import Sequence

# What YAML 1.1 (a YAML file read by OmegaConf) or an OmegaConf bool field takes for a boolean.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def word(
    name: str, value: object, choices: Sequence[str], error: type[Exception] = ValueError
) -> str:
    """``value`` as one of ``choices`` (lower case); raises ``error`` naming ``name`` otherwise.

    A boolean (``true`` parsed by Hydra) is the word ``true`` / ``false``, and ``yes``/``on`` /
    ``no``/``off`` are those words too when ``true`` / ``false`` are choices; None is ``null``
    (valid only where ``null`` is a choice). Case does not matter.
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    else:
        text = str(value).strip().lower()
    if "true" in choices and text in TRUE_WORDS:
        text = "true"
    elif "false" in choices and text in FALSE_WORDS:
        text = "false"
    if text not in choices:
        raise error(f"{name}={value!r} is not one of {', '.join(choices)}")
    return text


def switch(name: str, value: object, error: type[Exception] = ValueError) -> bool:
    """An on/off option (``true``/``false``, ``yes``/``no``, ``on``/``off``) -> bool."""
    return word(name, value, ("true", "false"), error) == "true"
