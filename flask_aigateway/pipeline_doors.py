"""What a door wraps around the pipeline's steps: the checks before them, the log row of a
request they refuse, and the one failure path of a request that entered them (:class:`Steps`).

Each door (the ``/v1`` views, :class:`~.extension.AIGateway`'s Python API, the Messages door)
runs the checks before :meth:`.Pipeline.enter`, so that a request refused before the steps — a
bad key, a body that does not parse — still gets its log row and metrics; then runs the steps
in a :meth:`DoorChecks.steps` block, so that however they end, the request is recorded,
finished and answered the same way at every door. They are methods of the pipeline's base
class, :class:`DoorChecks`, because every door calls them on the pipeline.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .accounting import Metrics, RequestRecord
from .admission import Admission
from .enums import Route
from .errors import AuthenticationError
from .governance import Principal, authenticate
from .governance.throttles import api_auth_answer
from .schemas import ChatRequest

if TYPE_CHECKING:
    from .state import GatewayState

#: Passed as ``api_key`` by trusted in-process callers: no key, no key rules.
TRUSTED = object()


class DoorChecks:
    """The checks a door runs before the steps, and the block it runs the steps in
    (:meth:`steps`), as methods of :class:`.Pipeline` (its base class): they need the
    pipeline's state, its metrics and its finish step."""

    state: GatewayState
    metrics: Metrics

    def finish(self, record: RequestRecord, admission: Admission | None) -> None:
        """The pipeline's finish step (:meth:`.Pipeline.finish`): a refused request ends
        there too."""
        raise NotImplementedError

    def steps(self, record: RequestRecord, *, stream: bool = False) -> Steps:
        """The block a door runs the pipeline's steps in, for ``record``'s request; ``with``
        it yields the request's fresh :class:`Admission` (see :class:`Steps`)."""
        return Steps(self, record, stream)

    def authenticate_first(
        self, api_key: str | None, request_id: str, route: Route = Route.CHAT_COMPLETIONS
    ) -> Principal:
        """Authenticate before the request body is read (the ``/v1`` views do), so an
        unauthenticated caller cannot make the gateway parse anything.

        A refused key still gets its log row and metrics, without a model (the body is never
        read), saying what the client gets: the ``api_auth`` throttle's 429 once the client's
        address is over it. Raises what :func:`authenticate` raises, or that 429
        (:class:`~.errors.RateLimitError`). Needs a request: the throttle counts per address.
        """
        with self.refusals(None, request_id, route):
            try:
                return authenticate(self.state, api_key)
            except AuthenticationError as error:
                answer = api_auth_answer(self.state, error)
                if answer is error:
                    raise
                raise answer from None

    def check_direct(
        self, request: ChatRequest, api_key: str | None, request_id: str, *, stream: bool
    ) -> Any:
        """The Python API's door (:meth:`AIGateway.chat`, :meth:`~AIGateway.stream`): what the
        HTTP door does before the steps, in its order. A key secret is authenticated first,
        then the request is validated (:meth:`ChatRequest.validate`: one built directly never
        went through ``from_body``), each refusal logged as over HTTP.

        Returns what to pass on as ``api_key``: :data:`TRUSTED` without a secret, else the
        key's :class:`Principal`. Raises the HTTP API's 401 and 400 errors.
        """
        route = Route.CHAT_COMPLETIONS
        caller: Any = TRUSTED
        if api_key is not None:
            with self.refusals(None, request_id, route, stream=stream):
                caller = authenticate(self.state, api_key)
        with self.refusals(caller, request_id, route, stream=stream):
            request.validate()
        return caller

    @contextmanager
    def refusals(
        self, api_key: Any, request_id: str, route: Route, *, stream: bool = False
    ) -> Iterator[None]:
        """Around what a door does before the steps (authenticating, reading and checking the
        body): a request refused there still gets its log row and metrics, attributed to its
        key when the key was authenticated first (a :class:`Principal`), so an operator sees a
        client sending bad requests, not only the ones that reached a model. Re-raises what
        :meth:`RequestRecord.failed_with` says to raise."""
        started = time.perf_counter()
        try:
            yield
        except BaseException as error:
            # Timed from the start of the block, so a body that trickled in is seen as slow.
            record = RequestRecord(request_id, route=route.value, stream=stream, started=started)
            record.started_at -= dt.timedelta(seconds=time.perf_counter() - started)
            if isinstance(api_key, Principal):
                record.key_id, record.team_id = api_key.key_id, api_key.team_id
            self.metrics.started()
            problem = record.failed_with(error)
            self.finish(record, None)
            if problem is not error:
                raise problem from error
            raise


class Steps:
    """The block around a request's steps, from its admission to its end: one failure path for
    every door (chat, embeddings, Messages; JSON and stream), so a fix to it is made once.

    Entering counts the request in flight (:meth:`.Metrics.started`, paired with the
    ``observe`` of its finish step) and gives the request's :class:`Admission`, which
    :meth:`.Pipeline.enter` fills as it admits. When the block raises, the record takes the
    failure (:meth:`RequestRecord.failed_with`: a database problem becomes its 503), the error
    the headers a success would carry (:meth:`Admission.onto`), the request is finished
    (settle or release, log row, metrics) *before* the error leaves, and what
    ``failed_with`` said to raise is raised, chained to the original.

    A JSON request is also finished when the block ends without error (its answer is
    complete). A stream's (``stream=True``) is not: the block ends when the upstream stream is
    open and the returned stream object finishes the request when it ends.

    A class with slots rather than a generator context manager: it is on every request's path,
    and this costs one small object.
    """

    __slots__ = ("_owner", "_stream", "admission", "record")

    def __init__(self, owner: DoorChecks, record: RequestRecord, stream: bool) -> None:
        self._owner = owner
        self._stream = stream
        self.record = record
        self.admission = Admission()

    def __enter__(self) -> Admission:
        self._owner.metrics.started()
        return self.admission

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            if not self._stream:
                self._owner.finish(self.record, self.admission)
            return
        problem = self.admission.onto(self.record.failed_with(error), self.record.cost)
        self._owner.finish(self.record, self.admission)
        if problem is not error:
            raise problem from error
        # Returning None lets ``error`` go on as it was raised.
