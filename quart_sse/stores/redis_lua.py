"""The Redis store's Lua scripts: every write that must be atomic across instances.

Keys are laid out for Redis Cluster (and serve a single Redis unchanged): everything of a
session, and the logs and metadata of its streams, share the hash tag of the session id,
so every script touches one slot.  With ``S`` the session's prefix ``qs:{<session>}:``:
``S s`` hash (model, created_at, last_activity, generating, queued, owner, count: the
messages it holds, title: its first user message, cut short, turns: the last turn number),
``S m`` list of messages (JSON), ``S tl`` the turn log (a Redis Stream whose entry ``0-n``
is turn ``n``: fields ``s`` its stream, ``m`` the user's message (JSON), ``f`` flags ``q``
queued, ``r`` regenerate; an entry ``x`` ends it when the session is deleted); per stream
``X`` of the session: ``S st:X`` hash (session, owner (the generating instance), uid (the
session's owner id), last id, finished, saved, closed, and while queued: queued, qmsg,
qkey), ``S log:X`` the Redis Stream of frames (entry ``0-k`` is event ``k``; field ``f``
the frame, ``e`` on the final one, ``c`` the close code of a stream whose owner went),
``S lease:X`` the owner's lease (its instance id, with a PX expiry), ``S ans:X`` the answer
text so far (for a close by another instance).

What spans sessions (the indexes by expiry and by activity, all sessions' and each owner's,
the stream → session map and the instance registry) is in other slots.  On a Redis Cluster a
script never touches it: :mod:`quart_sse.stores.redis` and
:mod:`quart_sse.stores.redis_sessions` write it from what the scripts return.  On a single
Redis, where one round trip costs the client about as much as a whole script, the caller
may declare the index pairs (and the registry) after the other keys, and the session script
writes them itself (:data:`HEAD`'s ``indexed`` and ``load``).

Every key a script touches is in ``KEYS``: :data:`_PRELUDE`'s ``K`` refuses any other.  A
script that finds it must touch a stream it was not given (the session's running stream,
to close it because its owner's lease lapsed, or its queued one) answers ``{'?', stream,
stream}`` before it writes anything, and the caller runs it again with those streams' keys.

Frames are opaque: a script never reads one.  Every session script starts with the same
ten arguments (:data:`HEAD`), then its own (``ARGV[11..]``), and answers ``{{activity,
expiry, owner}, result}``: the session's new place in the indexes that is left for the caller
to write (``''``: unchanged, or written by the script).
"""

from __future__ import annotations

HEAD = (
    "prefix",
    "instance",
    "now_iso",
    "now_ms",
    "session_ttl_ms",
    "retention_ms",
    "activity_ms",
    "indexed",
    "load_until_ms",
    "load",
)
"""``prefix``: the session's key prefix (``qs:{<session>}:``); ``activity_ms``: ``now_iso`` in
ms, the activity score of what the script does now (``now_ms`` is the clock).

``indexed`` (single Redis only): ``''``, the caller writes the indexes; else the owner the
caller believes the session has (``'-'`` none, ``'o:<owner>'``), whose index pair it declared
after every other key: the shard of all sessions' pair (by expiry, by activity), then that
owner's pair.  The script writes the move there when the session's owner is the one believed,
and leaves it to the caller otherwise.  ``load`` (``''``: none): this instance's count of
generated streams, written to the registry (its two keys declared last) with the lease expiry
``load_until_ms``."""

_PRELUDE = """
local P, me, now, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl_ms, ret_ms, act_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local indexed, load_until, load = ARGV[8], ARGV[9], ARGV[10]
local SID = P:sub(5, -3)  -- the session's id (P is qs:{<id>}:)

local declared = {}
for _, k in ipairs(KEYS) do declared[k] = true end
-- Every key touched is declared (one slot on a cluster): anything else is a bug, and fails.
local function K(name)
  if not declared[name] then error('undeclared key ' .. name) end
  return name
end
local function ready(sid) return declared[P .. 'st:' .. sid] ~= nil end

local SKEY, MKEY, TKEY = K(P .. 's'), K(P .. 'm'), K(P .. 'tl')
local IX = {'', ''}  -- the session's new activity score and expiry score, for the caller

-- The answer, with the session's move in the indexes: written here when the caller declared
-- the index pair of the session's owner (single Redis), else left to the caller.
local function done(result)
  local owner = redis.call('HGET', SKEY, 'owner') or ''
  local tail = #KEYS
  if load ~= '' then
    redis.call('ZADD', K(KEYS[tail - 1]), load_until, me)
    redis.call('HSET', K(KEYS[tail]), me, load)
    tail = tail - 2
  end
  local believed = owner == '' and '-' or 'o:' .. owner
  if indexed ~= '' and indexed == believed then
    local pairs = {KEYS[tail - 1], KEYS[tail]}
    if owner ~= '' then pairs = {KEYS[tail - 3], KEYS[tail - 2], KEYS[tail - 1], KEYS[tail]} end
    for i = 1, #pairs, 2 do
      if IX[2] ~= '' then redis.call('ZADD', pairs[i], IX[2], SID) end
      if IX[1] ~= '' then redis.call('ZADD', pairs[i + 1], IX[1], SID) end
    end
    IX = {'', ''}
  end
  return {{IX[1], IX[2], owner}, result}
end

-- A message went onto the session's list: its count and last activity follow.
local function pushed()
  local n = redis.call('LLEN', MKEY)
  redis.call('HSET', SKEY, 'count', n, 'last_activity', now)
  IX[1] = act_ms
  return n
end

-- The session's expiry moves on (SESSION_TTL) when it is touched and no generation runs.
local function touch()
  if ttl_ms > 0 then
    redis.call('PEXPIRE', SKEY, ttl_ms)
    redis.call('PEXPIRE', MKEY, ttl_ms)
    redis.call('PEXPIRE', TKEY, ttl_ms)
    IX[2] = now_ms + ttl_ms
  end
end

-- The stream has its final event k: it expires STREAM_RETENTION after it, the lease goes.
local function finish(sid, k)
  local meta, log = K(P .. 'st:' .. sid), K(P .. 'log:' .. sid)
  redis.call('HSET', meta, 'last', k, 'finished', '1')
  redis.call('DEL', K(P .. 'lease:' .. sid), K(P .. 'ans:' .. sid))
  redis.call('PEXPIRE', meta, ret_ms)
  redis.call('PEXPIRE', log, ret_ms)
end

-- A turn of the session: its marker in the session's turn log (the latest 100 are kept).
local function turn(sid, message, flags)
  local n = redis.call('HINCRBY', SKEY, 'turns', 1)
  redis.call('XADD', TKEY, 'MAXLEN', 100, '0-' .. n, 's', sid, 'm', message, 'f', flags)
  return n
end

-- End a log without its generation: a close mark `code` after its last frame.
local function close(sid, code)
  local meta = K(P .. 'st:' .. sid)
  local k = tonumber(redis.call('HGET', meta, 'last'))
  redis.call('XADD', K(P .. 'log:' .. sid), '0-' .. (k + 1), 'c', code)
  redis.call('HSET', meta, 'closed', code)
  redis.call('HDEL', meta, 'queued', 'qmsg', 'qkey')
  finish(sid, k)
end

local function alive(sid)
  return redis.call('EXISTS', K(P .. 'lease:' .. sid)) == 1
end

-- The streams of the session this script may have to close or start and was not given:
-- {'?', running, queued} (nothing written yet), or nil.
local function missing()
  local running = redis.call('HGET', SKEY, 'generating')
  local queued = redis.call('HGET', SKEY, 'queued')
  if (running and not ready(running)) or (queued and not ready(queued)) then
    return {'?', running or '', queued or ''}
  end
  return nil
end

-- Close a stream whose owner is gone: save the partial answer (kept beside the log)
-- marked interrupted, free the session, mark the log closed as `interrupted`.
-- Returns 0 for an unknown stream, 1 if it had already ended, 2 if it is closed now.
local function reap(sid)
  local meta = K(P .. 'st:' .. sid)
  local m = redis.call('HMGET', meta, 'session', 'last', 'finished', 'saved')
  if not m[1] then return 0 end
  if m[3] == '1' then return 1 end
  local exists = redis.call('EXISTS', SKEY) == 1
  if exists and m[4] ~= '1' then
    local answer = redis.call('GET', K(P .. 'ans:' .. sid))
    if answer and answer ~= '' then
      local message = {role = 'model', content = answer, timestamp = now, interrupted = true}
      redis.call('RPUSH', MKEY, cjson.encode(message))
      pushed()
    end
  end
  if exists and redis.call('HGET', SKEY, 'generating') == sid then
    redis.call('HDEL', SKEY, 'generating')
    local queued = redis.call('HGET', SKEY, 'queued')
    if queued then
      redis.call('HDEL', SKEY, 'queued')
      close(queued, 'interrupted')  -- nobody is left to start it
    end
    touch()
  end
  close(sid, 'interrupted')
  return 2
end
"""


# ARGV[11..]: stream, lease ms, the user's message (JSON), its title (the session's title if
# it has none yet: this is its first user message), "1" to regenerate (the trailing answers
# are dropped and the last user message is answered again; the message is not added).
# {turn number} when begun; the running stream's id when the slot is held by a live owner;
# -1 when the session does not exist; -2 when there is no user message to regenerate.  A
# holder whose lease lapsed is closed first.
BEGIN = (
    _PRELUDE
    + """
local sid, lease_ms, first, title = ARGV[11], tonumber(ARGV[12]), ARGV[13], ARGV[14]
local regen = ARGV[15] == '1'
if redis.call('EXISTS', SKEY) == 0 then return done(-1) end
local running = redis.call('HGET', SKEY, 'generating')
if running then
  local need = missing()
  if need then return need end
  if alive(running) then return done(running) end
  reap(running)
end
if regen then
  local n, drop = redis.call('LLEN', MKEY), 0
  first = nil
  while drop < n do
    local m = redis.call('LINDEX', MKEY, -1 - drop)
    if cjson.decode(m).role == 'user' then first = m break end
    drop = drop + 1
  end
  if not first then return done(-2) end
  if drop > 0 then redis.call('LTRIM', MKEY, 0, -1 - drop) end
  redis.call('HSET', SKEY, 'count', n - drop, 'last_activity', now)
  IX[1] = act_ms
else
  redis.call('RPUSH', MKEY, first)
  if title ~= '' then redis.call('HSETNX', SKEY, 'title', title) end
  pushed()
end
redis.call('HSET', SKEY, 'generating', sid)
redis.call('PERSIST', SKEY)
redis.call('PERSIST', MKEY)
redis.call('PERSIST', TKEY)
if ttl_ms > 0 then IX[2] = '+inf' end
local meta = K(P .. 'st:' .. sid)
redis.call('HSET', meta, 'session', ARGV[16], 'last', 0, 'owner', me)
local uid = redis.call('HGET', SKEY, 'owner')
if uid then redis.call('HSET', meta, 'uid', uid) end
redis.call('SET', K(P .. 'lease:' .. sid), me, 'PX', lease_ms)
return done({turn(sid, first, regen and 'r' or '')})
"""
)

# ARGV[11..]: stream, the user's message (JSON), who it counts against, the session id.
# Queues the message behind the running answer: {turn number}; 0 when nothing runs (start
# it instead); the queued stream's id when one is queued already; -1 when the session does
# not exist.
ENQUEUE = (
    _PRELUDE
    + """
local sid, message, key = ARGV[11], ARGV[12], ARGV[13]
if redis.call('EXISTS', SKEY) == 0 then return done(-1) end
local running = redis.call('HGET', SKEY, 'generating')
if running then
  local need = missing()
  if need then return need end
  if not alive(running) then
    reap(running)
    running = nil
  end
end
if not running then return done(0) end
local queued = redis.call('HGET', SKEY, 'queued')
if queued then return done(queued) end
redis.call('HSET', SKEY, 'queued', sid)
local meta = K(P .. 'st:' .. sid)
redis.call('HSET', meta, 'session', ARGV[14], 'last', 0, 'queued', '1', 'qmsg', message, 'qkey', key)
local uid = redis.call('HGET', SKEY, 'owner')
if uid then redis.call('HSET', meta, 'uid', uid) end
return done({turn(sid, message, 'q')})
"""
)

# ARGV[11..]: stream, code.  Takes a queued message out of its session's queue and closes its
# log as `code`: 1, or 0 when it is not queued (any more).
UNQUEUE = (
    _PRELUDE
    + """
local sid, code = ARGV[11], ARGV[12]
local meta = K(P .. 'st:' .. sid)
if redis.call('HGET', meta, 'queued') ~= '1' then return done(0) end
if redis.call('HGET', SKEY, 'queued') == sid then redis.call('HDEL', SKEY, 'queued') end
close(sid, code)
return done(1)
"""
)

# ARGV[11..]: session, stream, the answer (JSON, or "" for none), lease ms.
# The new history length; -1 when the lease is not ours any more; -2 without a session.
# When a message is queued behind the answer, the slot passes to it (its user message is
# saved, its log is ours, with a lease): {length, its stream, its message, its client key}.
SAVE = (
    _PRELUDE
    + """
local sid, answer, lease_ms = ARGV[11], ARGV[12], tonumber(ARGV[13])
local meta = K(P .. 'st:' .. sid)
if redis.call('GET', K(P .. 'lease:' .. sid)) ~= me or redis.call('HGET', meta, 'finished') == '1' then
  return done(-1)
end
local need = missing()
if need then return need end
redis.call('HSET', meta, 'saved', '1')
if redis.call('EXISTS', SKEY) == 0 then return done(-2) end
if answer ~= '' then
  redis.call('RPUSH', MKEY, answer)
  pushed()
end
local count = redis.call('LLEN', MKEY)
if redis.call('HGET', SKEY, 'generating') ~= sid then
  touch()
  return done(count)
end
redis.call('HDEL', SKEY, 'generating')
local q = redis.call('HGET', SKEY, 'queued')
if not q then
  touch()
  return done(count)
end
redis.call('HDEL', SKEY, 'queued')
local qmeta = K(P .. 'st:' .. q)
local qm = redis.call('HMGET', qmeta, 'qmsg', 'qkey')
redis.call('HDEL', qmeta, 'queued', 'qmsg', 'qkey')
redis.call('HSET', qmeta, 'owner', me)
redis.call('HSET', SKEY, 'generating', q)
redis.call('RPUSH', MKEY, qm[1])
pushed()
redis.call('SET', K(P .. 'lease:' .. q), me, 'PX', lease_ms)
return done({count, q, qm[1], qm[2] or ''})
"""
)

# {hash fields, messages} or nil; a holder whose lease lapsed is closed first, so that a
# dead instance never keeps the session locked.
LOAD = (
    _PRELUDE
    + """
local running = redis.call('HGET', SKEY, 'generating')
if running then
  local need = missing()
  if need then return need end
  if not alive(running) then reap(running) end
end
local fields = redis.call('HGETALL', SKEY)
if #fields == 0 then return done(false) end
return done({fields, redis.call('LRANGE', MKEY, 0, -1)})
"""
)

# ARGV[11..]: stream, "1" to close it even while its lease is ours (its owner lost frames).
# What a reader finds when the stream is quiet: 0 unknown stream, 1 ended, still owned or
# queued, 2 closed now because its owner's lease lapsed.
CHECK = (
    _PRELUDE
    + """
local sid, mine = ARGV[11], ARGV[12] == '1'
local meta = K(P .. 'st:' .. sid)
if redis.call('HGET', meta, 'queued') == '1' then return done(1) end
local holder = redis.call('GET', K(P .. 'lease:' .. sid))
if holder and not (mine and holder == me) then return done(1) end
local need = missing()
if need then return need end
return done(reap(sid))
"""
)

# ARGV[11..]: session.  Forget its messages (count 0, no title); 1, or 0 without the session.
CLEAR = (
    _PRELUDE
    + """
if redis.call('EXISTS', SKEY) == 0 then return done(0) end
redis.call('DEL', MKEY)
redis.call('HSET', SKEY, 'count', 0, 'last_activity', now)
redis.call('HDEL', SKEY, 'title')
IX[1] = act_ms
if not redis.call('HGET', SKEY, 'generating') then touch() end
return done(1)
"""
)

# The scripts below span sessions of one slot (several tags may share a slot): they take
# their keys in groups, not a session prefix.

# KEYS: per stream, its meta, log, lease and answer keys.  ARGV: the instance id, the
# retention (ms), then per stream: stream id, "1" if its last frame is the final one, n,
# the id of its first frame, the answer text the frames add, n frames.  Frames go in only
# while this instance holds the stream's lease and the first frame follows the log's last
# one; otherwise the stream is lost.  Returns {lost, to close}: the ids of the lost
# streams, and of those among them the caller must close (CHECK with "mine") because their
# owner is gone or is us.
APPEND = """
local me, ret_ms = ARGV[1], tonumber(ARGV[2])
local lost, reap = {}, {}
local i, s = 3, 1
while i <= #ARGV do
  local sid, final, n, first = ARGV[i], ARGV[i + 1] == '1', tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local text = ARGV[i + 4]
  local meta, log, lease, ans = KEYS[s], KEYS[s + 1], KEYS[s + 2], KEYS[s + 3]
  local m = redis.call('HMGET', meta, 'last', 'finished')
  local holder = redis.call('GET', lease)
  if m[1] and m[2] ~= '1' and holder == me and first == tonumber(m[1]) + 1 then
    for j = 1, n do
      local k = first + j - 1
      if final and j == n then
        redis.call('XADD', log, '0-' .. k, 'f', ARGV[i + 4 + j], 'e', '1')
      else
        redis.call('XADD', log, '0-' .. k, 'f', ARGV[i + 4 + j])
      end
    end
    if final then
      redis.call('HSET', meta, 'last', first + n - 1, 'finished', '1')
      redis.call('DEL', lease, ans)
      redis.call('PEXPIRE', meta, ret_ms)
      redis.call('PEXPIRE', log, ret_ms)
    else
      redis.call('HSET', meta, 'last', first + n - 1)
      if text ~= '' then redis.call('APPEND', ans, text) end
    end
  elseif not (m[1] and holder == me and first <= tonumber(m[1])) then
    -- (a retried call already applied is skipped silently)
    lost[#lost + 1] = sid
    if m[1] and m[2] ~= '1' and (holder == me or not holder) then reap[#reap + 1] = sid end
  end
  i, s = i + 5 + n, s + 4
end
return {lost, reap}
"""

# KEYS: per stream, its lease key and its session's hash.  ARGV: the instance id, lease ms,
# then the stream ids.  Renews this instance's leases; returns {lost, queued}: the streams
# whose lease is not ours any more, and the messages queued behind ours (their stream ids).
RENEW = """
local me, lease_ms = ARGV[1], tonumber(ARGV[2])
local lost, queued = {}, {}
for i = 3, #ARGV do
  local lease, skey = KEYS[2 * (i - 2) - 1], KEYS[2 * (i - 2)]
  if redis.call('GET', lease) == me then
    redis.call('PEXPIRE', lease, lease_ms)
    local q = redis.call('HGET', skey, 'queued')
    if q then queued[#queued + 1] = q end
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return {lost, queued}
"""

# An index pair (KEYS[1] by expiry, KEYS[2] by activity: all sessions of one shard, or one
# owner's): what has expired leaves both first.  Costs O(log n) per session gone since the
# last purge of the pair, nothing for the others.  ARGV[1]: the clock (ms).
_PURGE = """
local exp, act, now_ms = KEYS[1], KEYS[2], ARGV[1]
local function purge()
  while true do
    local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', '(' .. now_ms, 'LIMIT', 0, 500)
    if #gone == 0 then return end
    redis.call('ZREM', exp, unpack(gone))
    redis.call('ZREM', act, unpack(gone))
  end
end
purge()
"""

# How many sessions the pair holds.
COUNT = _PURGE + "return redis.call('ZCARD', act)\n"

# ARGV[2..]: how many, the cursor's score and session id ("" and "" for the first page).
# Up to that many entries (id, score) latest activity first (equal scores: session id
# descending, Redis's own order), from the cursor's place (found by rank, in O(log n), even
# if its session has moved or gone since).
LIST = (
    _PURGE
    + """
local want, after_score, after_id = tonumber(ARGV[2]), ARGV[3], ARGV[4]

-- a < b byte by byte (the order Redis gives members of equal score; Lua's < follows the locale).
local function below(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The rank (from the top) of the first entry after (score, id): a binary search among the
-- entries of that score, ordered by id descending.
local function rank_after(score, id)
  local lo = redis.call('ZCOUNT', act, '(' .. score, '+inf')
  local hi = lo + redis.call('ZCOUNT', act, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if below(redis.call('ZREVRANGE', act, mid, mid)[1], id) then hi = mid else lo = mid + 1 end
  end
  return lo
end

local rank = 0
if after_score ~= '' then rank = rank_after(after_score, after_id) end
return redis.call('ZREVRANGE', act, rank, rank + want - 1, 'WITHSCORES')
"""
)

SESSION_SCRIPTS = ("BEGIN", "ENQUEUE", "UNQUEUE", "SAVE", "LOAD", "CHECK", "CLEAR")
"""The scripts of one session (:data:`HEAD` first; they may answer ``{'?', ...}``)."""
