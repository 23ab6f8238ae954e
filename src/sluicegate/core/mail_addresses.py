"""Mail addresses as this instance sends to them: a plain ASCII `local@domain.tld`, checked by
one rule for the operator's From address, email channels and people alike.

Deliberately narrower than RFC 5321 (no quoted local parts, no address literals, no non-ASCII):
what passes is accepted by every relay, needs no SMTPUTF8, and cannot carry anything that would
end a header line.
"""

from __future__ import annotations

import re

# RFC 5321 4.5.3.1: a path (and so an address) is at most 256 octets with its angle brackets.
MAX_ADDRESS_LENGTH = 254
MAX_LOCAL_LENGTH = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")


def mail_address(value: str) -> str:
    """The address, stripped and lower-cased; ValueError saying what is wrong with it."""
    address = value.strip().lower()
    if len(address) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"is longer than {MAX_ADDRESS_LENGTH} characters")
    if _ADDRESS.fullmatch(address) is None:
        raise ValueError(
            "is not a mail address of the form name@example.com (ASCII letters, digits and "
            "!#$%&'*+/=?^_`{|}~.- before the @, a domain with a dot after it)"
        )
    if len(address.partition("@")[0]) > MAX_LOCAL_LENGTH:
        raise ValueError(f"has more than {MAX_LOCAL_LENGTH} characters before the @")
    return address


def is_mail_address(value: str) -> bool:
    try:
        mail_address(value)
    except ValueError:
        return False
    return True
