"""A store on a Redis server, shared by processes on any number of machines.

Every operation that reads and writes is one Lua script, so it is atomic on the server,
and one round trip: an event is two, its begin and its save. Times come from the server's
clock and expiry is Redis's own, sliding on use.

Keys, all under the prefix: ``secret``; ``ids``, the message id counter; per page
``page:<id>`` (the record), ``lease:<id>``, ``inbox:<id>`` and ``member:<id>`` (a hash
of group -> cursor); per group ``log:<group>``. Inboxes and logs are sorted sets scored
by message id. Redis Cluster is not supported: one script touches many pages' keys.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import secrets
import typing as t

from .base import Changes
from .base import checked_commands
from .base import checked_page_ttl
from .base import Command
from .base import DEFAULT_PAGE_TTL
from .base import dump_record
from .base import dumps
from .base import LeaseLost
from .base import load_record
from .base import Mail
from .base import Message
from .base import PageRecord
from .base import READ_LIMIT
from .base import Store
from .base import TRIMMED_PER_SEND

if t.TYPE_CHECKING:
    import redis

# Shared by the scripts below. A message is the JSON text [id,created,commands],
# scored by its id; times are milliseconds.
_LUA_PRELUDE = """
local function now()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function created(message)
  return tonumber(string.match(message, '^%[%d+,(%d+),')) or 0
end

local function id_of(message)
  return tonumber(string.match(message, '^%[(%d+),')) or 0
end

-- The messages sent since cutoff whose ids are at most last.
local function fresh(messages, cutoff, last)
  local kept = {}
  for _, message in ipairs(messages) do
    if created(message) >= cutoff and id_of(message) <= last then kept[#kept + 1] = message end
  end
  return kept
end

-- The id of the limit-th oldest of these lists of messages, or infinity if fewer.
local function last_id(lists, limit)
  local ids = {}
  for _, messages in ipairs(lists) do
    for _, message in ipairs(messages) do ids[#ids + 1] = id_of(message) end
  end
  if #ids <= limit then return math.huge end
  table.sort(ids)
  return ids[limit]
end

local function append(ids, key, commands, at, ttl)
  local id = redis.call('INCR', ids)
  redis.call('ZADD', key, id, '[' .. id .. ',' .. at .. ',' .. commands .. ']')
  -- Ids grow with time, so expired messages are the oldest; a few per send keep up.
  for _ = 1, __TRIMMED_PER_SEND__ do
    local oldest = redis.call('ZRANGE', key, 0, 0)[1]
    if created(oldest) >= at - ttl then break end
    redis.call('ZREMRANGEBYRANK', key, 0, 0)
  end
  redis.call('PEXPIRE', key, ttl)
end

-- Joining again keeps the cursor (stores/base.py); a new member starts after every
-- existing message.
local function join(members, ids, group)
  redis.call('HSETNX', members, group, redis.call('GET', ids) or 0)
end

-- Whether the lease was taken: false while another live owner holds it. The same owner
-- takes it again, so that a begin retried after a lost reply is not refused by itself.
local function take_lease(lease, owner, duration, ttl, at)
  local held = redis.call('HMGET', lease, 'owner', 'expires')
  local expires = tonumber(held[2])
  if expires and expires > at and held[1] ~= owner then return false end
  redis.call('HSET', lease, 'owner', owner, 'expires', at + duration)
  redis.call('PEXPIRE', lease, duration + ttl)
  return true
end

-- {record or false, inbox, {group, messages, group, messages, ...}}: the oldest limit
-- messages waiting, each inbox and log read up to limit only (LIMIT), never all of it.
local function load(page, inbox, members, log_prefix, ttl, limit, at)
  local record = redis.call('GET', page)
  local waiting = redis.call('ZRANGE', inbox, 0, limit - 1)
  local cursors = redis.call('HGETALL', members)
  -- The usual event: nothing waits, the page is in no group.
  if #waiting == 0 and #cursors == 0 then return {record, waiting, cursors} end
  local cutoff = at - ttl
  local names, lists = {}, {waiting}
  for i = 1, #cursors, 2 do
    local log = log_prefix .. cursors[i]
    names[#names + 1] = cursors[i]
    lists[#lists + 1] = redis.call(
      'ZRANGEBYSCORE', log, '(' .. cursors[i + 1], '+inf', 'LIMIT', 0, limit)
  end
  local last = last_id(lists, tonumber(limit))
  local groups = {}
  for i, name in ipairs(names) do
    groups[#groups + 1] = name
    groups[#groups + 1] = fresh(lists[i + 1], cutoff, last)
  end
  return {record, fresh(lists[1], cutoff, last), groups}
end
"""
_LUA_PRELUDE = _LUA_PRELUDE.replace("__TRIMMED_PER_SEND__", str(TRIMMED_PER_SEND))

# KEYS: lease. ARGV: owner, lease, page TTL.
_TAKE_LEASE = """
if take_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now()) then return 1 end
return 0
"""

# KEYS: secret. ARGV: a new secret, stored only if there is none.
_SECRET = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

# KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""

# KEYS: page, inbox, memberships. ARGV: the log key prefix, page TTL, read limit.
_LOAD = """
return load(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], now())
"""

# KEYS: lease, page, inbox, memberships. ARGV: owner, lease, page TTL, log key prefix,
# read limit. Nothing when a live owner holds the lease, else what _LOAD returns.
_BEGIN = """
local at = now()
if not take_lease(KEYS[1], ARGV[1], ARGV[2], ARGV[3], at) then return false end
return load(KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[3], ARGV[5], at)
"""

# KEYS: lease, page, inbox, memberships, ids, then the inbox or log of each send.
# ARGV: owner, page TTL, record, the last inbox id delivered (0: none), the plan (JSON
# of cursors, leaves and joins; empty: none), then the commands of each send.
_SAVE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
if ARGV[4] ~= '0' then redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4]) end
if ARGV[5] ~= '' then
  local plan = cjson.decode(ARGV[5])
  for group, cursor in pairs(plan.cursors) do
    -- A cursor moves only for a membership that still exists: one left stays left.
    if redis.call('HEXISTS', KEYS[4], group) == 1 then
      redis.call('HSET', KEYS[4], group, cursor)
    end
  end
  for _, group in ipairs(plan.leaves) do redis.call('HDEL', KEYS[4], group) end
  for _, group in ipairs(plan.joins) do join(KEYS[4], KEYS[5], group) end
end
redis.call('PEXPIRE', KEYS[4], ttl)
if #KEYS > 5 then
  local at = now()
  for i = 6, #KEYS do append(KEYS[5], KEYS[i], ARGV[i], at, ttl) end
end
return 1
"""

# KEYS: ids, an inbox or log. ARGV: commands, page TTL.
_APPEND = """
append(KEYS[1], KEYS[2], ARGV[1], now(), tonumber(ARGV[2]))
"""

# KEYS: memberships, ids. ARGV: group, page TTL.
_JOIN = """
join(KEYS[1], KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: memberships. ARGV: group.
_LEAVE = """
redis.call('HDEL', KEYS[1], ARGV[1])
"""


class _Script:
    """A Lua script, run by its SHA1 digest. A server that does not know it (restarted,
    flushed) is sent its text once, by ``EVAL``, which also keeps it there."""

    def __init__(self, client: redis.Redis, text: str) -> None:
        from redis.exceptions import NoScriptError

        self.text = text.encode()
        self.sha = hashlib.sha1(self.text).hexdigest().encode()
        #: redis-py's own, for a client with a single connection of its own.
        self.registered = client.register_script(text)
        self._unknown = NoScriptError

    def run(self, connection: t.Any, parts: list[bytes]) -> t.Any:
        """The script's reply, on ``connection``; ``parts`` are its encoded key count,
        keys and arguments."""
        connection.send_packed_command([_packed(b"EVALSHA", self.sha, parts)])
        try:
            return connection.read_response()
        except self._unknown:
            connection.send_packed_command([_packed(b"EVAL", self.text, parts)])
            return connection.read_response()


#: The bound of a pool that has none: redis-py's default ``max_connections`` until it
#: became 100.
_UNBOUNDED = 2**31


class _Connections:
    """The connections from a client's pool that the store's scripts run on.

    Taking a connection from the pool costs more than most scripts do, so from a pool
    without a real bound the store keeps those it took between its calls, at most one per
    thread using it at once. From a bounded pool, a ``BlockingConnectionPool`` included,
    each goes back after its call, as redis-py does: one kept there would be a connection
    the app's own commands, and the store's other threads, could not have.

    A connection is kept only once a reply was read in full; one that failed goes back to
    the pool, disconnected, and so does a kept one the server closed meanwhile, found
    before it is used (as the pool would). After a fork the child starts with none kept:
    those are the parent's.
    """

    def __init__(self, client: redis.Redis) -> None:
        from redis import BlockingConnectionPool
        from redis.exceptions import ConnectionError

        self.pool = client.connection_pool
        self._broken = (ConnectionError, OSError)
        # redis-py before 5.3 requires a command name here; later versions warn about one.
        name = inspect.signature(self.pool.get_connection).parameters.get("command_name")
        required = name is not None and name.default is inspect.Parameter.empty
        self._pool_args = ("EVALSHA",) if required else ()
        bound = getattr(self.pool, "max_connections", 0)
        self._blocking = isinstance(self.pool, BlockingConnectionPool)
        #: Whether connections are kept between calls, not given back after each.
        self.keeps = not self._blocking and isinstance(bound, int) and bound >= _UNBOUNDED
        self._idle: list[t.Any] = []
        self._pid = os.getpid()

    def own_pool(self) -> None:
        """The pool is the store's alone: keep what was taken, whatever its bound (a kept
        connection is one no one else waits for, and never more are kept than were in
        use at once)."""
        self.keeps = not self._blocking

    def take(self) -> t.Any:
        if not self.keeps:
            return self.pool.get_connection(*self._pool_args)
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        try:
            connection = self._idle.pop()  # atomic: no two threads get the same one
        except IndexError:
            return self.pool.get_connection(*self._pool_args)
        if self._closed(connection):
            self.give_back(connection)
            return self.pool.get_connection(*self._pool_args)
        return connection

    def done(self, connection: t.Any) -> None:
        """Keep or give back a connection whose reply was read in full."""
        if self.keeps:
            self._idle.append(connection)
        else:
            self.pool.release(connection)

    def give_back(self, connection: t.Any) -> None:
        """Give back a connection in an unknown state, disconnected."""
        connection.disconnect()
        self.pool.release(connection)

    def _closed(self, connection: t.Any) -> bool:
        """Whether a kept connection has anything to read: then the server closed it."""
        try:
            return bool(connection.can_read())
        except self._broken:
            return True

    def close(self) -> None:
        idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for connection in idle:
                self.pool.release(connection)


def _packed(command: bytes, script: bytes, parts: list[bytes]) -> bytes:
    """A command in the Redis protocol: the command, the script, then ``parts``."""
    chunks = [
        b"*%d\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
        % (len(parts) + 2, len(command), command, len(script), script)
    ]
    chunks += [b"$%d\r\n%s\r\n" % (len(part), part) for part in parts]
    return b"".join(chunks)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _messages(mail: Mail, stored: list[bytes | str]) -> list[Message]:
    """The messages as stored (``[id,created,commands]``); a damaged one is left out
    and marks ``mail`` damaged."""
    messages = []
    for text in stored:
        try:
            message_id, _, commands = json.loads(text)
        except (ValueError, TypeError):
            commands = None
        commands = checked_commands(commands)
        if commands is None:
            mail.damaged = True
        else:
            messages.append((message_id, commands))
    return messages


def _loaded(reply: list[t.Any]) -> tuple[PageRecord | None, Mail]:
    """The record and mail in the reply of a script that loads them."""
    record, inbox, groups = reply
    mail = Mail()
    mail.inbox = _messages(mail, inbox)
    for group, messages in zip(groups[::2], groups[1::2], strict=True):
        mail.groups[_text(group)] = _messages(mail, messages)
    return (None if record is None else load_record(record)), mail


class RedisStore(Store):
    """Keeps everything on a Redis server, for processes on several machines.

    .. code-block:: python

        store = RedisStore.from_url("redis://localhost:6379/0")

    :param client: a ``redis.Redis`` client (``decode_responses`` either way). From a
        pool without a bound (``max_connections=2**31``, redis-py's default until it
        became 100) the store keeps the connections it takes, at most one per thread
        using it at once; from a bounded pool it gives each back after its call, as
        redis-py does. A store made by :meth:`from_url` owns its pool, and keeps them.
    :param prefix: put before every key, to share one database with other data.
    :param page_ttl: seconds after its last use that a page is forgotten.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "piggyback:",
        page_ttl: float = DEFAULT_PAGE_TTL,
    ) -> None:
        page_ttl = checked_page_ttl(page_ttl)
        self.client = client
        self.prefix = prefix
        self.page_ttl = page_ttl
        self._ttl = max(1, round(page_ttl * 1000))
        self._owns_client = False
        self._secret: bytes | None = None
        from redis.exceptions import ResponseError

        self._error = ResponseError
        self._connections = _Connections(client)
        encoder = client.get_encoder()
        self._encoding = (encoder.encoding, encoder.encoding_errors)
        self._secret_script = _Script(client, _SECRET)
        self._take_lease = _Script(client, _LUA_PRELUDE + _TAKE_LEASE)
        self._release = _Script(client, _RELEASE)
        self._load = _Script(client, _LUA_PRELUDE + _LOAD)
        self._begin = _Script(client, _LUA_PRELUDE + _BEGIN)
        self._save = _Script(client, _LUA_PRELUDE + _SAVE)
        self._append = _Script(client, _LUA_PRELUDE + _APPEND)
        self._join = _Script(client, _LUA_PRELUDE + _JOIN)
        self._leave = _Script(client, _LEAVE)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "piggyback:",
        page_ttl: float = DEFAULT_PAGE_TTL,
        **options: t.Any,
    ) -> RedisStore:
        """Connect to the server a URL names, e.g. ``redis://localhost:6379/0``.

        :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
        :param prefix: put before every key.
        :param page_ttl: seconds after its last use that a page is forgotten.
        :param options: passed to ``redis.Redis.from_url``.
        """
        try:
            import redis
        except ImportError as e:
            raise ImportError(
                "The Redis store needs the 'redis' package: pip install 'piggyback[redis]'."
            ) from e
        store = cls(redis.Redis.from_url(url, **options), prefix=prefix, page_ttl=page_ttl)
        store._owns_client = True
        store._connections.own_pool()
        return store

    def secret(self) -> bytes:
        if self._secret is None:
            stored = self._call(self._secret_script, [self._key("secret")], [secrets.token_hex(32)])
            self._secret = bytes.fromhex(_text(stored))
        return self._secret

    def lock(self, page_id: str, lease: float) -> str | None:
        owner = secrets.token_hex(8)
        lease_ms = max(1, round(lease * 1000))
        keys = [self._key("lease", page_id)]
        if not self._call(self._take_lease, keys, [owner, lease_ms, self._ttl]):
            return None
        return owner

    def unlock(self, page_id: str, owner: str) -> None:
        self._call(self._release, [self._key("lease", page_id)], [owner])

    def begin(self, page_id: str, lease: float) -> tuple[str, PageRecord | None, Mail] | None:
        owner = secrets.token_hex(8)
        lease_ms = max(1, round(lease * 1000))
        keys = [self._key(kind, page_id) for kind in ("lease", "page", "inbox", "member")]
        args: list[str | int] = [owner, lease_ms, self._ttl, self._key("log", ""), READ_LIMIT]
        loaded = self._call(self._begin, keys, args)
        if loaded is None:
            return None
        return (owner, *_loaded(loaded))

    def load(self, page_id: str) -> tuple[PageRecord | None, Mail]:
        keys = [self._key(kind, page_id) for kind in ("page", "inbox", "member")]
        args: list[str | int] = [self._key("log", ""), self._ttl, READ_LIMIT]
        return _loaded(self._call(self._load, keys, args))

    def save(self, page_id: str, owner: str, changes: Changes) -> None:
        keys = [self._key(kind, page_id) for kind in ("lease", "page", "inbox", "member")]
        keys.append(self._key("ids"))
        keys += [self._key("inbox", p) for p, _ in changes.pushes]
        keys += [self._key("log", g) for g, _ in changes.publishes]
        plan = ""
        if changes.cursors or changes.leaves or changes.joins:
            plan = dumps(
                {"cursors": changes.cursors, "leaves": changes.leaves, "joins": changes.joins}
            )
        record = dump_record(changes.record)
        args: list[str | int] = [owner, self._ttl, record, changes.inbox_upto, plan]
        args += [dumps(commands) for _, commands in changes.pushes]
        args += [dumps(commands) for _, commands in changes.publishes]
        if not self._call(self._save, keys, args):
            raise LeaseLost(page_id)

    def push(self, page_id: str, commands: list[Command]) -> None:
        keys = [self._key("ids"), self._key("inbox", page_id)]
        self._call(self._append, keys, [dumps(commands), self._ttl])

    def publish(self, group: str, commands: list[Command]) -> None:
        keys = [self._key("ids"), self._key("log", group)]
        self._call(self._append, keys, [dumps(commands), self._ttl])

    def join(self, page_id: str, group: str) -> None:
        keys = [self._key("member", page_id), self._key("ids")]
        self._call(self._join, keys, [group, self._ttl])

    def leave(self, page_id: str, group: str) -> None:
        self._call(self._leave, [self._key("member", page_id)], [group])

    def close(self) -> None:
        """Close the client if :meth:`from_url` made it; a client passed in is yours."""
        self._connections.close()
        if self._owns_client:
            self.client.close()

    def _call(self, script: _Script, keys: list[str], args: list[str | int]) -> t.Any:
        """Run a script in one round trip, on a connection from :class:`_Connections` and
        without redis-py's per-command machinery, which costs more than the script."""
        if self.client.connection is not None:
            return script.registered(keys=keys, args=args)
        parts = [str(len(keys)).encode(), *map(self._encode, keys), *map(self._encode, args)]
        connection = self._connections.take()
        try:
            reply = connection.retry.call_with_retry(
                lambda: script.run(connection, parts), lambda error: connection.disconnect()
            )
        except self._error:  # an error reply, read in full
            self._connections.done(connection)
            raise
        except BaseException:
            self._connections.give_back(connection)
            raise
        self._connections.done(connection)
        return reply

    def _encode(self, value: str | int) -> bytes:
        if isinstance(value, str):
            return value.encode(*self._encoding)
        return str(value).encode()

    def _key(self, kind: str, name: str | None = None) -> str:
        return self.prefix + kind if name is None else f"{self.prefix}{kind}:{name}"
