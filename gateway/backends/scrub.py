"""Internal addresses taken out of text that a client will read.

A backend's error text often names where it was: ``Connect call failed ('10.0.3.7', 8080)``
from the HTTP client, ``ipv4:10.0.3.7:8500`` in gRPC's details, a URL. Answers with a 5xx status
say which backend failed and how, never where it runs; the full text goes to the log with the
request ID (``GatewayError.detail``). Over-matching is fine here: the text is a hint for a
client, and the log keeps everything.
"""

from __future__ import annotations

import re
from typing import Final

ADDRESS: Final = "<address>"

_PATTERNS: Final = [
    re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*[^\s'\"<>:.,;)]"),  # URLs, not their final ':' or '.'
    # gRPC peers and targets (ipv4:10.0.3.7:8500, ipv6:[::1]:8500, dns:///host:8500), no final ':'
    re.compile(r"\b(?:ipv4|ipv6|unix|unix-abstract|dns|vsock):(?:\[[^\]]*\]|[^\s,;'\"()\[\]])*(?<!:)"),
    re.compile(r"\(\s*'[^']*'\s*,\s*\d+[^)]*\)"),  # Python socket addresses: ('10.0.3.7', 8080)
    re.compile(r"\[[0-9A-Fa-f:.%\w]*:[0-9A-Fa-f:.%\w]*\](?::\d+)?"),  # [IPv6]:port
    re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?(?![\w:])"),  # bare IPv6
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"),  # IPv4[:port]
    re.compile(r"\b[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)*:\d{1,5}\b"),  # host:port
]


def scrub(text: str) -> str:
    """``text`` with every URL, IP address, ``host:port`` and gRPC peer replaced by ``<address>``."""
    for pattern in _PATTERNS:
        text = pattern.sub(ADDRESS, text)
    return text
