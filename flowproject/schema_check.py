"""A quick yes to "does this document fit that JSON schema?", without importing jsonschema.

Importing jsonschema costs ~0.05-0.2 s, paid by every ``run`` (the flowconfig is validated)
and every check (the state object is). Almost every document is valid, so the callers ask
``surely_valid`` first and use jsonschema only when it says no, to find and word the
problems. It knows the few keywords the project's schemas use; on any other it says no.
"""

import re

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def is_integer(value):
    """A JSON integer: an ``int`` that is not a boolean (JSON ``true`` loads as ``True``)."""
    return _TYPES["integer"](value)


def json_type(value):
    """The JSON Schema name of ``value``'s type (``integer`` for an int, ``number`` for a
    float), for messages naming what a document holds; the Python name for anything else."""
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


# Keywords that never make a document invalid.
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$comment"}


def surely_valid(instance, schema):
    """True only if ``instance`` fits ``schema`` (a JSON schema, draft 2020-12).

    False means "not sure": the document may be invalid, or the schema uses a keyword this
    check does not know. It is at least as strict as jsonschema (an integer is never a bool
    or a float here), so a True is never wrong.

    Parameters
    ----------
    instance : object
        A parsed JSON or TOML document.
    schema : dict

    Returns
    -------
    bool
    """
    for keyword, rule in schema.items():
        if keyword in _ANNOTATIONS or keyword.startswith("x-"):
            continue
        check = _KEYWORDS.get(keyword)
        if check is None or not check(instance, rule, schema):
            return False
    return True


def _type(value, rule, _schema):
    names = rule if isinstance(rule, list) else [rule]
    return any(name in _TYPES and _TYPES[name](value) for name in names)


def _properties(value, rule, _schema):
    if not isinstance(value, dict):
        return True
    return all(surely_valid(value[k], sub) for k, sub in rule.items() if k in value)


def _additional(value, rule, schema):
    if not isinstance(value, dict):
        return True
    if schema.get("patternProperties"):
        return False
    extra = [k for k in value if k not in schema.get("properties", {})]
    if rule is True or not extra:
        return True
    if rule is False:
        return False
    return all(surely_valid(value[k], rule) for k in extra)


def _items(value, rule, _schema):
    return not isinstance(value, list) or all(surely_valid(v, rule) for v in value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KEYWORDS = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": lambda v, rule, _s: not isinstance(v, dict) or all(k in v for k in rule),
    "items": _items,
    "enum": lambda v, rule, _s: any(type(v) is type(r) and v == r for r in rule),
    "const": lambda v, rule, _s: type(v) is type(rule) and v == rule,
    "pattern": lambda v, rule, _s: not isinstance(v, str) or re.search(rule, v) is not None,
    "minimum": lambda v, rule, _s: not _is_number(v) or v >= rule,
    "maximum": lambda v, rule, _s: not _is_number(v) or v <= rule,
    "minLength": lambda v, rule, _s: not isinstance(v, str) or len(v) >= rule,
    "maxLength": lambda v, rule, _s: not isinstance(v, str) or len(v) <= rule,
    "minItems": lambda v, rule, _s: not isinstance(v, list) or len(v) >= rule,
}
