"""Text from outside (source values, column names, servers' errors) made safe to show."""

from __future__ import annotations

import re

# Control characters (ESC sequences that retitle or recolour the terminal, carriage returns that
# overwrite a line) and invisible bidi/zero-width marks can come from any source-controlled text a
# message quotes (a column name, a server's error): shown escaped, never interpreted.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(message: str) -> str:
    """``message`` with control and invisible formatting characters shown as escapes."""
    return _UNPRINTABLE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), message)
