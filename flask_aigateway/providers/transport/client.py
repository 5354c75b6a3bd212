"""The :class:`Transport`: a requests Session per provider, a route per URL, and the send itself.

The one place a request goes out: it checks the URL and the headers, sets the call's deadline
and address policy for the hooks of :mod:`.connections`, and hands the answer to :mod:`.answers`.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.cookies
import requests.utils
from urllib3 import HTTPResponse
from urllib3.exceptions import LocationValueError

from ... import __version__
from ...errors import UpstreamError
from ...wording import plural
from ..addresses import host_problem, host_syntax_problem
from ..base import UpstreamRequest
from ..wire import FRAMING_HEADERS
from .answers import UpstreamResponse, UpstreamStream
from .connections import _BLOCK_PRIVATE, _DEADLINE, _Adapter, _NoCookies
from .errors import _blocked, _connect_error

log = logging.getLogger(__name__)

#: What a plain request accepts when the adapter did not say: what urllib3 can decode here.
_ACCEPT_ENCODING = requests.utils.DEFAULT_ACCEPT_ENCODING
_DECODABLE = frozenset({*HTTPResponse.CONTENT_DECODERS, "identity"})
_USER_AGENT = f"flask-aigateway/{__version__}"

#: Headers requests/urllib3 write themselves (and hop-by-hop ones); refused when a provider is
#: configured, and here again for rows stored before that check existed.
_OWN_HEADERS = FRAMING_HEADERS

_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class _Route:
    """What one URL needs per call, resolved once: the host to name in errors, the proxies
    from the environment and the CA bundle (both as requests resolves them)."""

    host: str
    #: Empty when no proxy applies to the URL (the adapter then takes its direct path).
    proxies: dict[str, str]
    verify: bool | str
    adapter: _Adapter
    #: The URL prepared once (requests' normalisation and IDNA encoding); each call copies it.
    template: requests.PreparedRequest


class Transport:
    """Pooled HTTP to upstreams through ``requests``: one Session per ``pool_key``.

    ``pool_key`` is the provider id, so each provider has its own Session and connection pools
    (up to ``pool_maxsize`` idle connections per host) and one slow provider cannot starve
    another. Thread- and greenlet-safe. Redirects are not followed: a 3xx reaches the adapter
    as an error (fix the base URL). TLS is verified against ``ca_bundle`` (default: certifi's
    bundle, or ``REQUESTS_CA_BUNDLE``), and ``HTTP(S)_PROXY``/``ALL_PROXY``/``NO_PROXY`` are
    honoured (resolved once per URL); SOCKS proxies need PySocks (``requests[socks]``).
    Cookies are never kept.

    A call is sent through the Session's mounted adapter (``HTTPAdapter.send``) with a request
    prepared from a per-URL template (``PreparedRequest.copy`` + ``prepare_method``/
    ``prepare_headers``/``prepare_body``): what ``Session.send`` adds per call (response hooks,
    copying Set-Cookie into its jar, following redirects) and what ``prepare_url`` redoes per
    call (parsing, IDNA, requoting a URL that never changes) are work the gateway turns off or
    needs once. Proxies and the CA bundle are still resolved by the Session
    (``merge_environment_settings``), once per URL.
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        pool_maxsize: int = 100,
        *,
        max_response_bytes: int = 32 * 1024 * 1024,
        max_sse_line_bytes: int = 4 * 1024 * 1024,
        ca_bundle: str | None = None,
        block_private: bool = False,
        stream_idle_timeout: float = 300.0,
        stream_max_seconds: float = 3600.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.stream_max_seconds = stream_max_seconds
        self.block_private = block_private
        self.pool_maxsize = pool_maxsize
        self.max_response_bytes = max_response_bytes
        self.max_sse_line_bytes = max_sse_line_bytes
        self.ca_bundle = ca_bundle
        self._sessions: dict[str, requests.Session] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Transport:
        """A transport configured by the app's resolved ``AIGATEWAY_*`` settings."""
        return cls(
            connect_timeout=settings["AIGATEWAY_CONNECT_TIMEOUT"],
            pool_maxsize=settings["AIGATEWAY_UPSTREAM_POOL_SIZE"],
            max_response_bytes=settings["AIGATEWAY_MAX_RESPONSE_BYTES"],
            max_sse_line_bytes=settings["AIGATEWAY_MAX_SSE_LINE_BYTES"],
            ca_bundle=settings["AIGATEWAY_CA_BUNDLE"],
            block_private=settings["AIGATEWAY_BLOCK_PRIVATE_UPSTREAMS"],
            stream_idle_timeout=settings["AIGATEWAY_STREAM_IDLE_TIMEOUT"],
            stream_max_seconds=settings["AIGATEWAY_STREAM_MAX_SECONDS"],
        )

    def _session(self, pool_key: str) -> requests.Session:
        session = self._sessions.get(pool_key)
        if session is not None:
            return session
        with self._lock:
            session = self._sessions.get(pool_key)
            if session is None:
                session = requests.Session()
                session.cookies = requests.cookies.RequestsCookieJar(policy=_NoCookies())
                adapter = _Adapter(
                    pool_connections=4,
                    pool_maxsize=self.pool_maxsize,
                    max_retries=0,
                    pool_block=False,
                )
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._sessions[pool_key] = session
        return session

    def _route(self, url: str, pool_key: str, session: requests.Session) -> _Route:
        route = self._routes.get((pool_key, url))
        if route is not None:
            return route
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        try:
            port = parts.port
        except ValueError:
            port = -1
        if (
            parts.scheme not in _SCHEMES
            or not parts.hostname
            or port == -1
            or any(ord(ch) < 33 or ord(ch) == 127 for ch in url)
        ):
            raise UpstreamError(
                f"Could not send the request to the upstream {host or 'at the base URL'}: the "
                "URL is not http(s) with a host, or contains spaces or control characters. "
                "Check the provider's base URL.",
                retryable=False,
            )
        problem = host_problem(parts.hostname, block_private=self.block_private)
        if problem is not None:
            raise _blocked(host, problem)
        problem = host_syntax_problem(url)
        if problem is not None:
            raise UpstreamError(
                f"Could not send the request to the upstream {host}: {problem}. Nothing was "
                "sent. Check the provider's base URL.",
                retryable=False,
            )
        settings = session.merge_environment_settings(url, {}, None, self.ca_bundle, None)
        proxies: dict[str, str] = settings["proxies"]
        proxy = requests.utils.select_proxy(url, proxies)
        if proxy and proxy.lower().startswith("socks") and not importlib.util.find_spec("socks"):
            raise UpstreamError(
                f"The proxy for the upstream {host} (from HTTPS_PROXY, HTTP_PROXY or "
                "ALL_PROXY) is a SOCKS proxy, and SOCKS support is not installed: "
                "pip install 'requests[socks]', or set NO_PROXY for this host.",
                retryable=False,
            )
        template = requests.PreparedRequest()
        template.prepare_url(url, None)
        adapter = session.get_adapter(url)
        assert isinstance(adapter, _Adapter)
        route = _Route(host, proxies if proxy else {}, settings["verify"], adapter, template)
        with self._lock:
            if len(self._routes) > 4096:
                self._routes.clear()
            self._routes[(pool_key, url)] = route
        return route

    def _request(
        self, req: UpstreamRequest, timeout: float, pool_key: str, stream: bool
    ) -> tuple[requests.Response, str]:
        session = self._session(pool_key)
        route = self._route(req.url, pool_key, session)
        headers = dict(req.headers)
        names = {k.lower() for k in headers}
        if not names.isdisjoint(_OWN_HEADERS):
            own = sorted(names & _OWN_HEADERS)
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: "
                f"{plural(len(own), 'header')} {', '.join(own)} "
                f"{plural(len(own), 'is', 'are')} set by the gateway itself. Remove "
                f"{plural(len(own), 'it', 'them')} from the provider's extra headers.",
                retryable=False,
            )
        if "accept-encoding" not in names:
            headers["Accept-Encoding"] = "identity" if stream else _ACCEPT_ENCODING
        if "user-agent" not in names:
            headers["User-Agent"] = _USER_AGENT
        log.debug("upstream %s %s (pool %s, stream=%s)", req.method, route.host, pool_key, stream)
        token = _DEADLINE.set(time.monotonic() + timeout)
        policy = _BLOCK_PRIVATE.set(self.block_private)
        try:
            prepared = route.template.copy()
            prepared.prepare_method(req.method)
            prepared.prepare_headers(headers)
            prepared.prepare_body(req.body, None)
            response = route.adapter.send(
                prepared,
                stream=True,
                timeout=(min(self.connect_timeout, timeout), timeout),
                verify=route.verify,
                proxies=route.proxies,
            )
        except requests.exceptions.InvalidHeader as exc:
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: a header contains "
                "a line break or is not valid. Check the provider's extra headers and API key.",
                retryable=False,
            ) from exc
        except UnicodeError:
            # A header value outside Latin-1 (http.client encodes headers so): an API key or
            # extra header stored before they were checked. The exception carries the value,
            # so it is not chained; the router moves on to the next deployment.
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: the provider's API "
                "key or an extra header holds characters an HTTP header cannot carry. Set them "
                "again with `flask provider update`.",
                retryable=False,
            ) from None
        except LocationValueError:
            raise UpstreamError(
                f"Could not send the request to the upstream {route.host}: its host name is "
                "not valid. Check the provider's base URL.",
                retryable=False,
            ) from None
        except requests.RequestException as exc:
            raise _connect_error(exc, route.host, timeout) from exc
        finally:
            _DEADLINE.reset(token)
            _BLOCK_PRIVATE.reset(policy)
        encoding = response.headers.get("content-encoding")
        if encoding and any(
            e.strip().lower() not in _DECODABLE for e in encoding.split(",") if e.strip()
        ):
            response.close()
            raise UpstreamError(
                f"The upstream {route.host} answered with Content-Encoding {encoding!r}, which "
                "the gateway cannot decode; set an Accept-Encoding extra header it honours.",
                retryable=False,
            )
        return response, route.host

    def send(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamResponse:
        """Send ``req`` and read the whole answer; ``timeout`` (seconds) is what is left of the
        request's deadline and bounds the whole call, the body's last byte included."""
        response, host = self._request(req, timeout, pool_key, stream=False)
        stream = UpstreamStream(response, host, timeout, self)
        with stream:
            body = stream.read_body()
        return UpstreamResponse(stream.status, stream.headers, body)

    def open_stream(self, req: UpstreamRequest, *, timeout: float, pool_key: str) -> UpstreamStream:
        """Send ``req`` and return once the answer's headers arrived; ``timeout`` (what is
        left of the request's deadline) bounds the wait for them and for the stream's first
        output; after :meth:`UpstreamStream.started`, each read waits at most
        ``stream_idle_timeout`` for more."""
        response, host = self._request(req, timeout, pool_key, stream=True)
        return UpstreamStream(response, host, timeout, self)

    def close(self) -> None:
        """Close every pooled connection (app teardown, tests)."""
        with self._lock:
            sessions, self._sessions, self._routes = list(self._sessions.values()), {}, {}
        for session in sessions:
            session.close()
