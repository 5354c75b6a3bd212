"""Where upstream calls may go: the address policy for provider base URLs.

Checked twice: when a provider is configured (the host as written: a metadata name or a
literal address) and on every new upstream connection, after DNS resolution (the address
actually connected to), so a name that resolves — or is re-pointed — to a forbidden address is
refused too. Link-local addresses (169.254.0.0/16, fe80::/10: where cloud metadata services
live) and known metadata names and addresses are always refused; loopback and private ranges
are allowed (Ollama and vLLM run there) unless ``AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS`` is set.
Pure: no I/O here (``requests`` only prepares a URL).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import requests

#: Host names of cloud metadata services (compared lower-case, without a trailing dot).
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
#: Metadata addresses outside the link-local ranges (AWS IPv6, Alibaba, Oracle's is link-local).
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(address: str, *, block_private: bool) -> str | None:
    """Why connecting to ``address`` (a literal IP, IPv6 zone allowed) is refused, or None.

    Not an IP address at all: None (a host name; see :func:`host_problem`).
    """
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address (where cloud metadata services answer)"
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not a unicast address"
    if block_private and not ip.is_global:
        return (
            f"{ip} is a loopback or private address, refused because "
            "AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS is set"
        )
    return None


def host_problem(host: str, *, block_private: bool) -> str | None:
    """Why a base URL's host (as written) is refused, or None: metadata names always, literal
    addresses by :func:`address_problem` — in the numeric forms the system's resolver reads
    too (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376`` are 169.254.169.254). Names
    are resolved only at call time."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        return f"{name} is a cloud metadata host"
    return address_problem(_numeric_ipv4(name) or name, block_private=block_private)


def _numeric_ipv4(name: str) -> str | None:
    """The IPv4 address a host written as a number stands for (``inet_aton``'s forms: one to
    four parts, decimal, octal or hex), in dotted form; None for a name."""
    if not name or name.strip("0123456789abcdefx.") or not name[0].isdigit():
        return None
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(name)))
    except OSError:
        return None


def host_syntax_problem(url: str) -> str | None:
    """Why the host of ``url`` (an http(s) URL) cannot be connected to, or None.

    The same steps as a request: ``requests`` converts an internationalised name to its ASCII
    form (IDNA 2008), then the connection encodes each label, which must hold 1 to 63
    characters (``api..openai.com``, a typo, has an empty one). Literal addresses pass.
    """
    prepared = requests.PreparedRequest()
    try:
        prepared.prepare_url(url, None)
    except (requests.RequestException, ValueError):
        return "its host name is not a valid (internationalised) domain name"
    host = urlsplit(prepared.url or "").hostname or ""
    if _is_address(host):
        return None
    try:
        host.encode("idna")
    except UnicodeError:
        return (
            "its host name has an empty label (two dots in a row, or a leading dot) or a label "
            "longer than 63 characters"
        )
    return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
