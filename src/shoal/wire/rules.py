"""The rules the CLI and the server both check: job ids, submit tokens, name lengths.

Defined once here and imported by the SDK client / CLI (which refuse a bad value before any
request) and by the server (which refuses it whatever sent it). Standard library ``re`` only:
the CLI imports this on its start-up path, whose cold start is measured.
"""

from __future__ import annotations

import re

#: A job id: 1-16 ASCII digits (the store keeps ids below 2**53).
JOB_ID_RE = re.compile(r"\A[0-9]{1,16}\Z")
#: A submit token (what makes a retried submit safe): 1-128 of letters, digits and ``._:-``.
SUBMIT_TOKEN_RE = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")
#: The longest job, site, app or study name; a longer name or name prefix can match nothing.
#: (The CLI checks a name's length only; the server's full rules for names are
#: shoal.wire.jobdef.JOB_NAME_RE and PLAIN_NAME_RE, built on this length.)
NAME_MAX_CHARS = 128


def job_id_number(raw: str) -> int | None:
    """``raw`` as a job id if it is one (1-16 ASCII digits), else None. ``isdecimal`` alone
    takes other scripts' digits, and ``int`` of thousands of digits raises."""
    return int(raw) if JOB_ID_RE.fullmatch(raw) else None
