"""Router state shared by every gateway process through Redis (atomic Lua scripts).

Same semantics as :class:`~flask_aigateway.router_state.MemoryRouterState`, with the clock of
the Redis server (``TIME``) so that processes on several machines agree on cooldowns. Keys,
all under ``AIGATEWAY_REDIS_PREFIX`` and all expiring:

* ``router:dep:<id>`` hash: ``failures``, ``open_until``, ``probe_until``, ``latency``,
  ``prober`` (the lease id of the last probe) (one day after the last write);
* ``router:inflight:<id>`` sorted set: lease id → expiry; expired leases do not count, so a
  crashed process cannot inflate in-flight counts for long;
* ``router:rpm:<id>`` sorted set: lease id → start time, the last minute only;
* ``router:turn:<alias>`` counter of round-robin turns (one day after the last turn).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..redis_batch import ScriptBatch, ScriptCall
from .state import EWMA_ALPHA, RPM_WINDOW, DeploymentStats, Refusal, Ticket, new_lease_id

#: Lifetime of health, latency and round-robin keys after their last write, seconds.
STATE_TTL = 86_400

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function num(value) if value then return tonumber(value) end return nil end
"""

# KEYS: (dep hash, inflight zset, rpm zset) per deployment. ARGV: rpm window.
# Returns now, then 7 values per deployment.
_STATS = (
    _PRELUDE
    + """
local out = {tostring(now)}
for i = 1, #KEYS, 3 do
  local h = redis.call('HMGET', KEYS[i], 'failures', 'open_until', 'probe_until', 'latency')
  out[#out + 1] = h[1] or ''
  out[#out + 1] = h[2] or ''
  out[#out + 1] = h[3] or ''
  out[#out + 1] = h[4] or ''
  out[#out + 1] = tostring(redis.call('ZCOUNT', KEYS[i + 1], '(' .. tostring(now), '+inf'))
  local since = '(' .. tostring(now - tonumber(ARGV[1]))
  out[#out + 1] = tostring(redis.call('ZCOUNT', KEYS[i + 2], since, '+inf'))
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[i + 2], since, '+inf',
                            'WITHSCORES', 'LIMIT', 0, 1)
  out[#out + 1] = oldest[2] or ''
end
return out
"""
)

#: ``router_begin(dep hash, inflight zset, rpm zset, at)``: one attempt's lease, with ARGV[at…]
#: = lease id, rpm limit (0: none), lease seconds, probe seconds, rpm window, state ttl.
#: Returns {1, probe} or {0, reason, until, now}. A function so that a request's admission
#: script can take the lease too, in its round trip (governance/gate.py). A lease id already
#: in flight is the same call run twice (redis-py sends a command again when its reply is
#: lost): granted as before, without the checks that would now see the lease itself.
ROUTER_BEGIN_LUA = """
local function router_begin(kdep, kinflight, krpm, at)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local lease_id = ARGV[at]
  if redis.call('ZSCORE', kinflight, lease_id) then
    -- Sent again by redis-py (the first run's reply was lost): the lease is taken already.
    if redis.call('HGET', kdep, 'prober') == lease_id then return {1, 1} end
    return {1, 0}
  end
  local probe = 0
  local open_until = tonumber(redis.call('HGET', kdep, 'open_until') or '')
  if open_until then
    if now < open_until then return {0, 'open', tostring(open_until), tostring(now)} end
    local probe_until = tonumber(redis.call('HGET', kdep, 'probe_until') or '')
    if probe_until and now < probe_until then
      return {0, 'open', tostring(probe_until), tostring(now)}
    end
    probe = 1
  end
  local limit = tonumber(ARGV[at + 1])
  local window = tonumber(ARGV[at + 4])
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', krpm, '-inf', tostring(now - window))
    if redis.call('ZCARD', krpm) >= limit then
      local oldest = redis.call('ZRANGE', krpm, 0, 0, 'WITHSCORES')
      return {0, 'rpm', tostring(tonumber(oldest[2]) + window), tostring(now)}
    end
    redis.call('ZADD', krpm, tostring(now), lease_id)
    redis.call('EXPIRE', krpm, math.ceil(window) + 1)
  end
  if probe == 1 then
    redis.call('HSET', kdep, 'probe_until', tostring(now + tonumber(ARGV[at + 3])),
               'prober', lease_id)
    redis.call('EXPIRE', kdep, ARGV[at + 5])
  end
  local lease = tonumber(ARGV[at + 2])
  redis.call('ZREMRANGEBYSCORE', kinflight, '-inf', tostring(now))
  redis.call('ZADD', kinflight, tostring(now + lease), lease_id)
  redis.call('EXPIRE', kinflight, math.ceil(lease) + 60)
  return {1, probe}
end
"""

# KEYS: dep hash, inflight zset, rpm zset. ARGV: as router_begin's.
_BEGIN = ROUTER_BEGIN_LUA + "return router_begin(KEYS[1], KEYS[2], KEYS[3], 1)\n"

# KEYS: dep hash. ARGV: latency seconds ('' when none), alpha, state ttl, '1' for the probe.
# Only the probe closes an open circuit: another attempt's success, reported after the circuit
# opened (a stream's, at its end), began before it did.
_SUCCEEDED = (
    _PRELUDE
    + """
if ARGV[4] == '1' or not redis.call('HGET', KEYS[1], 'open_until') then
  redis.call('HSET', KEYS[1], 'failures', '0')
  redis.call('HDEL', KEYS[1], 'open_until', 'probe_until')
end
if ARGV[1] ~= '' then
  local sample = tonumber(ARGV[1])
  local old = num(redis.call('HGET', KEYS[1], 'latency'))
  if old then
    local alpha = tonumber(ARGV[2])
    sample = alpha * sample + (1 - alpha) * old
  end
  redis.call('HSET', KEYS[1], 'latency', tostring(sample))
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: dep hash, inflight zset. ARGV: as _SUCCEEDED's, then the lease id.
_FINISH = _SUCCEEDED.replace("return 1", "redis.call('ZREM', KEYS[2], ARGV[5])\nreturn 1")

# KEYS: dep hash, inflight zset, rpm zset. ARGV: lease id, '1' when an unsettled probe ends
# (its slot is freed), '1' when the lease was never used for an attempt (its RPM slot is given
# back too: a lease taken with a request's admission that was then refused or served from the
# cache). Older callers send two keys and two arguments.
_RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then redis.call('HDEL', KEYS[1], 'probe_until') end
if ARGV[3] == '1' then redis.call('ZREM', KEYS[3], ARGV[1]) end
return 1
"""

# KEYS: dep hash. ARGV: threshold, cooldown seconds, state ttl. Returns open_until or ''.
_FAILED = (
    _PRELUDE
    + """
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open_until = num(redis.call('HGET', KEYS[1], 'open_until'))
local threshold = tonumber(ARGV[1])
local result = ''
if threshold > 0 and (failures >= threshold or open_until) then
  result = tostring(now + tonumber(ARGV[2]))
  redis.call('HSET', KEYS[1], 'open_until', result)
  redis.call('HDEL', KEYS[1], 'probe_until')
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return result
"""
)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return float(text) if text else None


class RedisRouterState:
    """Router state in Redis; every call is one round trip (a Lua script or a pipeline), and
    the end of an attempt (:meth:`finish`, :meth:`release`) can join a :class:`ScriptBatch`."""

    def __init__(self, client: Any, key: Callable[..., str]) -> None:
        self._client = client
        self._key = key
        self._stats = client.register_script(_STATS)
        self._begin = client.register_script(_BEGIN)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._failed = client.register_script(_FAILED)
        self._finish = client.register_script(_FINISH)
        self._release = client.register_script(_RELEASE)

    @property
    def client(self) -> Any:
        """The Redis client the scripts run on (a request's admission can share its round
        trip when it runs on the same one)."""
        return self._client

    def _keys(self, deployment_id: str) -> list[str]:
        return [
            self._key("router", "dep", deployment_id),
            self._key("router", "inflight", deployment_id),
            self._key("router", "rpm", deployment_id),
        ]

    def stats(self, deployment_ids: Sequence[str]) -> dict[str, DeploymentStats]:
        if not deployment_ids:
            return {}
        keys = [k for deployment_id in deployment_ids for k in self._keys(deployment_id)]
        raw = self._stats(keys=keys, args=[RPM_WINDOW])
        now = _float(raw[0]) or 0.0
        out = {}
        for i, deployment_id in enumerate(deployment_ids):
            values = raw[1 + 7 * i : 8 + 7 * i]
            failures, open_until, probe_until, latency, in_flight, rpm_used, oldest = values
            out[deployment_id] = DeploymentStats(
                now=now,
                in_flight=int(_float(in_flight) or 0),
                latency=_float(latency),
                failures=int(_float(failures) or 0),
                open_until=_float(open_until),
                probe_until=_float(probe_until),
                rpm_used=int(_float(rpm_used) or 0),
                rpm_oldest=_float(oldest),
            )
        return out

    def next_turn(self, alias: str) -> int:
        key = self._key("router", "turn", alias)
        pipe = self._client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, STATE_TTL)
        turn, _ = pipe.execute()
        return int(turn) - 1

    def begin(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> Ticket | Refusal:
        call, answer = self.begin_call(
            deployment_id,
            rpm_limit=rpm_limit,
            lease_seconds=lease_seconds,
            probe_seconds=probe_seconds,
        )
        return answer(call())

    def begin_call(
        self,
        deployment_id: str,
        *,
        rpm_limit: int | None,
        lease_seconds: float,
        probe_seconds: float,
    ) -> tuple[ScriptCall, Callable[[Any], Ticket | Refusal]]:
        """:meth:`begin` as a call to send later (with a request's admission, in its round
        trip) and what turns its reply into the ticket or the refusal."""
        lease_id = new_lease_id()
        call = ScriptCall(
            self._begin,
            self._keys(deployment_id),
            [lease_id, rpm_limit or 0, lease_seconds, probe_seconds, RPM_WINDOW, STATE_TTL],
        )

        def answer(result: Any) -> Ticket | Refusal:
            if int(result[0]) == 1:
                return Ticket(deployment_id, lease_id, probe=int(result[1]) == 1, shared=True)
            reason = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            return Refusal(
                deployment_id, reason, _float(result[2]) or 0.0, _float(result[3]) or 0.0
            )

        return call, answer

    def succeeded(self, ticket: Ticket, latency: float | None) -> None:
        ticket.settled = True
        self._succeeded(
            keys=[self._key("router", "dep", ticket.deployment_id)],
            args=[
                "" if latency is None else repr(latency),
                EWMA_ALPHA,
                STATE_TTL,
                "1" if ticket.probe else "0",
            ],
        )

    def failed(self, ticket: Ticket, *, threshold: int, cooldown: float) -> float | None:
        ticket.settled = True
        result = self._failed(
            keys=[self._key("router", "dep", ticket.deployment_id)],
            args=[threshold, cooldown, STATE_TTL],
        )
        return _float(result)

    def release(self, ticket: Ticket, batch: ScriptBatch | None = None) -> None:
        call = self.release_call(ticket)
        if call is None:
            return
        if batch is None:
            call()
        else:
            batch.add(call, what="releasing a deployment's in-flight lease")

    def release_call(self, ticket: Ticket) -> ScriptCall | None:
        """:meth:`release` as a call to run later (None: already released). The ticket
        counts as released from now on."""
        if ticket.released:
            return None
        ticket.released = True
        return ScriptCall(
            self._release,
            self._keys(ticket.deployment_id),
            [
                ticket.lease_id,
                "1" if ticket.probe and not ticket.settled else "0",
                "0" if ticket.used else "1",
            ],
        )

    def finish(
        self, ticket: Ticket, latency: float | None, batch: ScriptBatch | None = None
    ) -> None:
        call = self.finish_call(ticket, latency)
        if batch is None:
            call()
        else:
            batch.add(call, what="reporting a deployment's success")

    def finish_call(self, ticket: Ticket, latency: float | None) -> ScriptCall:
        """:meth:`finish` as a call to run later. The ticket counts as settled and released
        from now on."""
        args = ["" if latency is None else repr(latency), EWMA_ALPHA, STATE_TTL]
        args.append("1" if ticket.probe else "0")
        if ticket.released:
            ticket.settled = True
            return ScriptCall(
                self._succeeded, [self._key("router", "dep", ticket.deployment_id)], args
            )
        ticket.settled = ticket.released = True
        return ScriptCall(
            self._finish, self._keys(ticket.deployment_id)[:2], [*args, ticket.lease_id]
        )
