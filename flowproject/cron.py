"""Check a cron schedule the way Argo Workflows will read it.

A deployed ``SensorFlow`` runs as an Argo CronWorkflow. Metaflow hands Argo the first five
whitespace-separated fields of ``@schedule(cron=...)`` (``" ".join(cron.split()[:5])``), and
Argo parses them with robfig/cron v3's standard parser. ``cron_problems`` accepts exactly what
that parser accepts, so a schedule that passes here deploys, and one that fails here would have
been rejected by ``argo-workflows create`` or, worse, deployed and never run:

- five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or JAN-DEC),
  day of week (0-6 or SUN-SAT; 7 is not Sunday);
- in each field a comma-separated list of ``*``, ``?`` (the same as ``*``), ``N``, ``N-M``,
  each optionally ``/STEP`` (``N/STEP`` means ``N-max/STEP``); names are case-insensitive;
- or one descriptor: ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily``
  ``@midnight`` ``@hourly``, or ``@every <duration>`` (a Go duration: ``90s``, ``1h30m``).

Quartz / AWS extensions (``L``, ``W``, ``#``) are not cron syntax for Argo and are rejected.
Two things robfig parses but that never run are rejected too: a day of month that no listed
month has (``0 0 31 2 *``) and a field that lists no value (``,``). Stricter than Argo on
purpose: more than five fields (Metaflow would silently drop the rest, such as an AWS year
field) and a ``TZ=`` prefix (sensor schedules are UTC; Metaflow's five-field cut breaks it).
"""

import re

# Field name, lowest value, highest value, names (robfig's bounds).
_MONTH_NAMES = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DOW_NAMES = "sun mon tue wed thu fri sat".split()
FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}),
    ("day-of-week", 0, 6, {name: i for i, name in enumerate(_DOW_NAMES)}),
)

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

# Longest day of each month in any year (February 29 comes every four years, well within the
# five years robfig's Next() looks ahead).
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_MONTH_TITLES = [m.title() for m in _MONTH_NAMES]

# Go's time.ParseDuration units, in nanoseconds.
_GO_DURATION_UNITS = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,
    "\u03bcs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_GO_MAX_DURATION = 2**63 - 1


class _FieldError(ValueError):
    pass


def _go_atoi(text):
    """strconv.Atoi for a non-negative value: optional sign, ASCII digits only."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise _FieldError("is not a number")
    value = int(text)
    if value < 0:
        raise _FieldError("is negative")
    return value


def _value(text, names, expr):
    """A number or name of ``expr``, a list item of a field."""
    if text.lower() in names:
        return names[text.lower()]
    try:
        return _go_atoi(text)
    except _FieldError as e:
        what = ("%r: " % expr if text != expr else "") + repr(text)
        if names:
            first, last = list(names)[0].upper(), list(names)[-1].upper()
            raise _FieldError(
                "%s is neither a number nor a name (%s-%s)" % (what, first, last)
            ) from None
        raise _FieldError("%s %s" % (what, e)) from None


def _parse_field(text, low, high, names):
    """The values a field selects and whether it is a bare ``*``/``?`` (robfig's starBit)."""
    values, star = set(), False
    for expr in [e for e in text.split(",") if e]:
        range_and_step = expr.split("/")
        low_and_high = range_and_step[0].split("-")
        expr_star = False
        if low_and_high[0] in ("*", "?"):
            # robfig ignores anything after "*-": "*-5" reads as "*".
            start, end, expr_star = low, high, True
        elif len(low_and_high) > 2:
            raise _FieldError("%r has more than one '-'" % expr)
        else:
            start = _value(low_and_high[0], names, expr)
            end = _value(low_and_high[-1], names, expr)
        if len(range_and_step) == 1:
            step = 1
        elif len(range_and_step) == 2:
            step = _value(range_and_step[1], {}, expr)
            if len(low_and_high) == 1:
                end = high  # "N/STEP" means "N-max/STEP"
            if step > 1:
                expr_star = False
        else:
            raise _FieldError("%r has more than one '/'" % expr)
        if start < low:
            raise _FieldError("%r starts below the minimum %d" % (expr, low))
        if end > high:
            sunday = " (Sunday is 0 or SUN)" if names.get("sun") == 0 else ""
            raise _FieldError("%r goes above the maximum %d%s" % (expr, high, sunday))
        if start > end:
            raise _FieldError("%r starts after it ends" % expr)
        if step == 0:
            raise _FieldError("%r has a step of 0" % expr)
        values.update(range(start, end + 1, step))
        star = star or expr_star
    if not values:
        raise _FieldError("%r lists no value, so the schedule never runs" % text)
    return values, star


def go_duration_problem(text):
    """Why Go's ``time.ParseDuration`` rejects ``text``, or None when it accepts it."""
    return _go_duration(text)[1]


def _go_duration(text):
    """``(nanoseconds, None)`` as Go's ``time.ParseDuration`` reads ``text``, or
    ``(None, why)`` when it rejects it."""
    s = text
    sign = -1 if s[:1] == "-" else 1
    if s[:1] in ("+", "-"):
        s = s[1:]
    if s == "0":
        return 0, None
    if not s:
        return None, "expected a duration such as '90s', '15m' or '1h30m', found %r" % text
    total = 0
    while s:
        match = _GO_DURATION_PART.match(s)
        whole, frac, unit = match.groups()
        if not whole and not frac:
            return None, "expected a number before each unit, found %r" % text
        if not unit:
            return None, (
                "expected a unit (ns, us, ms, s, m or h) after each number, found %r" % text
            )
        if unit not in _GO_DURATION_UNITS:
            return None, "unknown unit %r in %r (use ns, us, ms, s, m or h)" % (unit, text)
        scale = _GO_DURATION_UNITS[unit]
        total += int(whole or "0") * scale + int(frac or "0") * scale // 10 ** len(frac or "")
        if total > _GO_MAX_DURATION:
            return None, "duration %r is too long" % text
        s = s[match.end() :]
    return sign * total, None


def every_seconds(expression):
    """The interval of an ``@every <duration>`` schedule in seconds, None for any other.

    As robfig/cron's ``Every``: whole seconds, at least one.

    Parameters
    ----------
    expression : str
        A schedule that ``cron_problems`` accepts.
    """
    handed = " ".join(expression.split()[:5])
    if not handed.startswith("@every "):
        return None
    nanoseconds, problem = _go_duration(handed[len("@every ") :])
    if problem:
        raise ValueError(problem)
    return max(1, nanoseconds // 10**9)


def _descriptor_problem(expression):
    if expression in DESCRIPTORS:
        return None
    if expression.startswith("@every "):
        return go_duration_problem(expression[len("@every ") :])
    return "expected one of %s or '@every <duration>', found %r" % (
        ", ".join(DESCRIPTORS),
        expression,
    )


def cron_problems(expression, key="sensor.cron_schedule"):
    """Check a cron schedule as Argo Workflows will parse it after Metaflow deploys it.

    Parameters
    ----------
    expression : str
        The schedule: five fields (minute hour day-of-month month day-of-week) or a
        descriptor such as ``@daily`` or ``@every 1h``.
    key : str
        Name of the setting, used in the messages.

    Returns
    -------
    List[str]
        One message per problem (at most one), empty when Argo will run the schedule.
    """
    # What Metaflow hands Argo: whitespace collapsed, fields after the fifth dropped.
    fields = expression.split()
    handed = " ".join(fields[:5])
    if fields and fields[0].startswith(("TZ=", "CRON_TZ=")):
        return [
            "%s: a time zone prefix is not supported (the sensor's schedule is in UTC), found %r"
            % (key, expression)
        ]
    if handed.startswith("@"):
        problem = _descriptor_problem(handed)
        return ["%s: %s" % (key, problem)] if problem else []
    if len(fields) != 5:
        hint = ""
        if len(fields) > 5:
            hint = (
                "; Metaflow hands Argo only the first five (an AWS-style year field would be "
                "dropped, and AWS numbers weekdays from SUN=1, cron from SUN=0)"
            )
        return [
            "%s: expected 5 fields (minute hour day-of-month month day-of-week) or a "
            "descriptor such as '@daily', found %r with %d field(s)%s"
            % (key, expression, len(fields), hint)
        ]
    parsed = []
    for text, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        try:
            parsed.append(_parse_field(text, low, high, names))
        except _FieldError as e:
            return ["%s: %s field %s (in %r)" % (key, name, e, expression)]
    (days, days_star), (months, _), (_, weekdays_star) = parsed[2], parsed[3], parsed[4]
    # robfig matches a day when day-of-month AND day-of-week match if either is a bare '*'
    # or '?', else when either matches: only in the AND case can the listed days never come.
    if (days_star or weekdays_star) and min(days) > max(_DAYS_IN_MONTH[m - 1] for m in months):
        return [
            "%s: %r never runs: no day %s in %s"
            % (
                key,
                expression,
                " or ".join(str(d) for d in sorted(days)),
                ", ".join(_MONTH_TITLES[m - 1] for m in sorted(months)),
            )
        ]
    return []
