"""The only package that does upstream HTTP: ``requests`` Sessions per provider, the request's
deadline and a stream's idle allowance, bounded reads, SSE reading.

Each provider (``pool_key``) has its own :class:`requests.Session` with an ``HTTPAdapter``
(keep-alive pools, ``max_retries=0``: the router owns retries and counts every attempt, so a
request the upstream may have received is never sent again here). Every answer is read with
``stream=True`` in bounded pieces, under caps on the decoded body and on one SSE line. The
``timeout`` the pipeline passes is what is left of the request's deadline: every socket read of
the answer (interim ``1xx`` answers, headers, a JSON body, a stream until its first output) is
given only the time left, so a trickling upstream cannot hold a call past it; once a stream has
started (:meth:`UpstreamStream.started`), each read is given ``stream_idle_timeout`` instead, so
a long generation is cut only by silence. Answers with ambiguous framing (a Content-Length
that is not plain digits, a chunk size that is not plain hex, a Transfer-Encoding other than
``chunked``, folded header lines) are refused and their connection discarded.

Network failures leave here as the gateway's errors: a refused or reset connection is a
retryable :class:`UpstreamError` naming the host (never the URL's query or a header), a connect
or read timeout an :class:`UpstreamTimeoutError`. Headers are never logged (they carry provider
credentials). Nothing outside this package imports urllib3.

:mod:`.client` holds :class:`Transport` (Sessions, routes, the send), :mod:`.answers` what a
call returns (:class:`UpstreamResponse`, :class:`UpstreamStream`), :mod:`.connections` the
hooks into requests/urllib3/http.client every connection goes through, and :mod:`.errors` the
mapping of their failures to the gateway's errors.
"""

from __future__ import annotations

from .answers import UpstreamResponse, UpstreamStream
from .client import Transport

__all__ = ["Transport", "UpstreamResponse", "UpstreamStream"]
