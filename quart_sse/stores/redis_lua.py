"""The Redis store's Lua scripts: every write that must be atomic across instances.

Keys (``P`` is the prefix, ``qs:``): ``P s:{session}`` hash (model, created_at,
last_activity, generating, owner, count: the messages it holds, title: its first user
message, cut short), ``P m:{session}`` list of messages (JSON), ``P sessions`` sorted set
(score: the session's expiry in ms, ``+inf`` when it has none) and ``P so:{owner}`` the same
for one owner's sessions, ``P active`` sorted set of the same sessions scored by their last
activity (ms; equal scores: by session id) and ``P ao:{owner}`` the same for one owner's
(each pair, expiry and activity, holds the same sessions: a session whose expiry has passed
leaves both at once), ``P st:{stream}`` hash (session, owner
(the generating instance), uid (the session's owner id), last id, finished, saved, closed),
``P log:{stream}`` the Redis Stream of frames (entry ``0-k`` is event ``k``; field ``f`` the
frame, ``e`` on the final one), ``P lease:{stream}`` the owner's lease (its instance id,
with a PX expiry), ``P ans:{stream}`` the answer text so far (for a close by another
instance), ``P running`` and ``P instances`` sorted sets scored by lease expiry (for the
cluster-wide figures).  ``P tl:{session}`` is the session's turn log, a Redis Stream whose
entry ``0-n`` is turn ``n`` (fields ``s`` its stream, ``m`` the user's message (JSON),
``f`` flags: ``q`` queued, ``r`` regenerate); an entry with field ``x`` ends it (the session
was deleted).  A queued message (``if_busy=enqueue``) is the session's field ``queued`` (its
stream) and its stream's hash fields ``queued``, ``qmsg`` (the message), ``qkey`` (who it
counts against).

Frames are opaque: a script never reads one.  A stream closed because its owner is gone
gets an entry ``c`` (the code, ``interrupted``) instead of a frame; its readers write the
final event themselves.

Key names are built inside the scripts from the prefix, so the scripts suit one Redis
server (or a replicated one), not Redis Cluster.

Every script starts with the same seven arguments (:data:`HEAD`), then its own (``ARGV[8..]``).
"""

from __future__ import annotations

HEAD = ("prefix", "instance", "now_iso", "now_ms", "session_ttl_ms", "retention_ms", "activity_ms")
"""``activity_ms``: ``now_iso`` in ms, the activity score of what the script does now (it
follows ``now_iso``, which a write may take from its message; ``now_ms`` is the clock)."""

_PRELUDE = """
local P, me, now, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl_ms, ret_ms, act_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

-- A session's place in the indexes (all sessions, and its owner's), scored by its expiry.
local function index(session, score)
  redis.call('ZADD', P .. 'sessions', score, session)
  local owner = redis.call('HGET', P .. 's:' .. session, 'owner')
  if owner then redis.call('ZADD', P .. 'so:' .. owner, score, session) end
end

-- A session's place in the activity indexes (all sessions, and its owner's): now.
local function active(session)
  redis.call('ZADD', P .. 'active', act_ms, session)
  local owner = redis.call('HGET', P .. 's:' .. session, 'owner')
  if owner then redis.call('ZADD', P .. 'ao:' .. owner, act_ms, session) end
end

-- A message went onto the session's list: its count and last activity follow.
local function pushed(session)
  local n = redis.call('LLEN', P .. 'm:' .. session)
  redis.call('HSET', P .. 's:' .. session, 'count', n, 'last_activity', now)
  active(session)
  return n
end

-- The session's expiry moves on (SESSION_TTL) when it is touched and no generation runs.
local function touch(session)
  if ttl_ms > 0 then
    redis.call('PEXPIRE', P .. 's:' .. session, ttl_ms)
    redis.call('PEXPIRE', P .. 'm:' .. session, ttl_ms)
    redis.call('PEXPIRE', P .. 'tl:' .. session, ttl_ms)
    index(session, now_ms + ttl_ms)
  end
end

-- The stream has its final event k: it expires STREAM_RETENTION after it, the lease goes.
local function finish(sid, k)
  local meta, log = P .. 'st:' .. sid, P .. 'log:' .. sid
  redis.call('HSET', meta, 'last', k, 'finished', '1')
  redis.call('DEL', P .. 'lease:' .. sid, P .. 'ans:' .. sid)
  redis.call('ZREM', P .. 'running', sid)
  redis.call('PEXPIRE', meta, ret_ms)
  redis.call('PEXPIRE', log, ret_ms)
end

-- A turn of the session: its marker in the session's turn log (the latest 100 are kept).
local function turn(session, sid, message, flags)
  local n = redis.call('HINCRBY', P .. 's:' .. session, 'turns', 1)
  redis.call('XADD', P .. 'tl:' .. session, 'MAXLEN', 100, '0-' .. n, 's', sid, 'm', message, 'f', flags)
  return n
end

-- End a log without its generation: a close mark `code` after its last frame.
local function close(sid, code)
  local meta = P .. 'st:' .. sid
  local k = tonumber(redis.call('HGET', meta, 'last'))
  redis.call('XADD', P .. 'log:' .. sid, '0-' .. (k + 1), 'c', code)
  redis.call('HSET', meta, 'closed', code)
  redis.call('HDEL', meta, 'queued', 'qmsg', 'qkey')
  finish(sid, k)
end

-- Close a stream whose owner is gone: save the partial answer (kept beside the log)
-- marked interrupted, free the session, mark the log closed as `interrupted`.
-- Returns 0 for an unknown stream, 1 if it had already ended, 2 if it is closed now.
local function reap(sid)
  local meta = P .. 'st:' .. sid
  local m = redis.call('HMGET', meta, 'session', 'last', 'finished', 'saved')
  if not m[1] then return 0 end
  if m[3] == '1' then return 1 end
  local session = m[1]
  local skey = P .. 's:' .. session
  local exists = redis.call('EXISTS', skey) == 1
  if exists and m[4] ~= '1' then
    local answer = redis.call('GET', P .. 'ans:' .. sid)
    if answer and answer ~= '' then
      local message = {role = 'model', content = answer, timestamp = now, interrupted = true}
      redis.call('RPUSH', P .. 'm:' .. session, cjson.encode(message))
      pushed(session)
    end
  end
  if exists and redis.call('HGET', skey, 'generating') == sid then
    redis.call('HDEL', skey, 'generating')
    local queued = redis.call('HGET', skey, 'queued')
    if queued then
      redis.call('HDEL', skey, 'queued')
      close(queued, 'interrupted')  -- nobody is left to start it
    end
    touch(session)
  end
  close(sid, 'interrupted')
  return 2
end

local function alive(sid)
  return redis.call('EXISTS', P .. 'lease:' .. sid) == 1
end
"""


# ARGV[8..]: session, stream, lease ms, the user's message (JSON), its title (the session's
# title if it has none yet: this is its first user message), "1" to regenerate (the trailing
# answers are dropped and the last user message is answered again; the message is not added).
# {turn number} when begun; the running stream's id when the slot is held by a live owner;
# -1 when the session does not exist; -2 when there is no user message to regenerate.  A
# holder whose lease lapsed is closed first.
BEGIN = (
    _PRELUDE
    + """
local session, sid, lease_ms, first, title = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12]
local regen = ARGV[13] == '1'
local skey, mkey = P .. 's:' .. session, P .. 'm:' .. session
if redis.call('EXISTS', skey) == 0 then return -1 end
local running = redis.call('HGET', skey, 'generating')
if running then
  if alive(running) then return running end
  reap(running)
end
if regen then
  local n, drop = redis.call('LLEN', mkey), 0
  first = nil
  while drop < n do
    local m = redis.call('LINDEX', mkey, -1 - drop)
    if cjson.decode(m).role == 'user' then first = m break end
    drop = drop + 1
  end
  if not first then return -2 end
  if drop > 0 then redis.call('LTRIM', mkey, 0, -1 - drop) end
  redis.call('HSET', skey, 'count', n - drop, 'last_activity', now)
  active(session)
else
  redis.call('RPUSH', mkey, first)
  if title ~= '' then redis.call('HSETNX', skey, 'title', title) end
  pushed(session)
end
redis.call('HSET', skey, 'generating', sid)
redis.call('PERSIST', skey)
redis.call('PERSIST', mkey)
redis.call('PERSIST', P .. 'tl:' .. session)
if ttl_ms > 0 then index(session, '+inf') end
redis.call('HSET', P .. 'st:' .. sid, 'session', session, 'last', 0, 'owner', me)
local uid = redis.call('HGET', skey, 'owner')
if uid then redis.call('HSET', P .. 'st:' .. sid, 'uid', uid) end
redis.call('SET', P .. 'lease:' .. sid, me, 'PX', lease_ms)
redis.call('ZADD', P .. 'running', now_ms + lease_ms, sid)
return {turn(session, sid, first, regen and 'r' or '')}
"""
)

# ARGV[8..]: session, stream, the user's message (JSON), who it counts against.  Queues the
# message behind the running answer: {turn number}; 0 when nothing runs (start it instead);
# the queued stream's id when one is queued already; -1 when the session does not exist.
ENQUEUE = (
    _PRELUDE
    + """
local session, sid, message, key = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local skey = P .. 's:' .. session
if redis.call('EXISTS', skey) == 0 then return -1 end
local running = redis.call('HGET', skey, 'generating')
if running and not alive(running) then
  reap(running)
  running = nil
end
if not running then return 0 end
local queued = redis.call('HGET', skey, 'queued')
if queued then return queued end
redis.call('HSET', skey, 'queued', sid)
local meta = P .. 'st:' .. sid
redis.call('HSET', meta, 'session', session, 'last', 0, 'queued', '1', 'qmsg', message, 'qkey', key)
local uid = redis.call('HGET', skey, 'owner')
if uid then redis.call('HSET', meta, 'uid', uid) end
return {turn(session, sid, message, 'q')}
"""
)

# ARGV[8..]: stream, code.  Takes a queued message out of its session's queue and closes its
# log as `code`: 1, or 0 when it is not queued (any more).
UNQUEUE = (
    _PRELUDE
    + """
local sid, code = ARGV[8], ARGV[9]
local meta = P .. 'st:' .. sid
if redis.call('HGET', meta, 'queued') ~= '1' then return 0 end
local skey = P .. 's:' .. redis.call('HGET', meta, 'session')
if redis.call('HGET', skey, 'queued') == sid then redis.call('HDEL', skey, 'queued') end
close(sid, code)
return 1
"""
)

# ARGV[8..]: per stream: stream id, "1" if its last frame is the final one, n, the id of
# its first frame, the answer text the frames add, n frames.  Frames go in only while this
# instance holds the stream's lease and the first frame follows the log's last one;
# otherwise the stream is lost (closed as interrupted if its owner is gone or is us).
# Returns the ids of the lost streams.
APPEND = (
    _PRELUDE
    + """
local lost = {}
local i = 8
while i <= #ARGV do
  local sid, final, n, first = ARGV[i], ARGV[i + 1] == '1', tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local text = ARGV[i + 4]
  local meta, log = P .. 'st:' .. sid, P .. 'log:' .. sid
  local m = redis.call('HMGET', meta, 'last', 'finished')
  local holder = redis.call('GET', P .. 'lease:' .. sid)
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
      finish(sid, first + n - 1)
    else
      redis.call('HSET', meta, 'last', first + n - 1)
      if text ~= '' then redis.call('APPEND', P .. 'ans:' .. sid, text) end
    end
  elseif not (m[1] and holder == me and first <= tonumber(m[1])) then
    -- (a retried call already applied is skipped silently)
    lost[#lost + 1] = sid
    if m[1] and m[2] ~= '1' and (holder == me or not holder) then reap(sid) end
  end
  i = i + 5 + n
end
return lost
"""
)

# ARGV[8..]: session, stream, the answer (JSON, or "" for none), lease ms.
# The new history length; -1 when the lease is not ours any more; -2 without a session.
# When a message is queued behind the answer, the slot passes to it (its user message is
# saved, its log is ours, with a lease): {length, its stream, its message, its client key}.
SAVE = (
    _PRELUDE
    + """
local session, sid, answer, lease_ms = ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local meta = P .. 'st:' .. sid
if redis.call('GET', P .. 'lease:' .. sid) ~= me or redis.call('HGET', meta, 'finished') == '1' then
  return -1
end
redis.call('HSET', meta, 'saved', '1')
local skey, mkey = P .. 's:' .. session, P .. 'm:' .. session
if redis.call('EXISTS', skey) == 0 then return -2 end
if answer ~= '' then
  redis.call('RPUSH', mkey, answer)
  pushed(session)
end
local count = redis.call('LLEN', mkey)
if redis.call('HGET', skey, 'generating') ~= sid then
  touch(session)
  return count
end
redis.call('HDEL', skey, 'generating')
local q = redis.call('HGET', skey, 'queued')
if not q then
  touch(session)
  return count
end
redis.call('HDEL', skey, 'queued')
local qmeta = P .. 'st:' .. q
local qm = redis.call('HMGET', qmeta, 'qmsg', 'qkey')
redis.call('HDEL', qmeta, 'queued', 'qmsg', 'qkey')
redis.call('HSET', qmeta, 'owner', me)
redis.call('HSET', skey, 'generating', q)
redis.call('RPUSH', mkey, qm[1])
pushed(session)
redis.call('SET', P .. 'lease:' .. q, me, 'PX', lease_ms)
redis.call('ZADD', P .. 'running', now_ms + lease_ms, q)
return {count, q, qm[1], qm[2] or ''}
"""
)

# ARGV[8..]: session.  {hash fields, messages} or nil; a holder whose lease lapsed is
# closed first, so that a dead instance never keeps the session locked.
LOAD = (
    _PRELUDE
    + """
local session = ARGV[8]
local skey = P .. 's:' .. session
local running = redis.call('HGET', skey, 'generating')
if running and not alive(running) then reap(running) end
local fields = redis.call('HGETALL', skey)
if #fields == 0 then return false end
return {fields, redis.call('LRANGE', P .. 'm:' .. session, 0, -1)}
"""
)

# ARGV[8..]: stream.  What a reader finds when the stream is quiet: 0 unknown stream,
# 1 ended, still owned or queued, 2 closed now because its owner's lease lapsed.
CHECK = (
    _PRELUDE
    + """
local sid = ARGV[8]
if alive(sid) or redis.call('HGET', P .. 'st:' .. sid, 'queued') == '1' then return 1 end
return reap(sid)
"""
)

# ARGV[8..]: lease ms, streams.  Renews this instance's leases; returns the streams whose
# lease is not ours any more.
RENEW = (
    _PRELUDE
    + """
local lease_ms = tonumber(ARGV[8])
local lost = {}
for i = 9, #ARGV do
  local sid = ARGV[i]
  local lease = P .. 'lease:' .. sid
  if redis.call('GET', lease) == me then
    redis.call('PEXPIRE', lease, lease_ms)
    redis.call('ZADD', P .. 'running', now_ms + lease_ms, sid)
  else
    lost[#lost + 1] = sid
  end
end
redis.call('ZADD', P .. 'instances', now_ms + lease_ms, me)
redis.call('ZREMRANGEBYSCORE', P .. 'instances', '-inf', now_ms - 60000)
redis.call('ZREMRANGEBYSCORE', P .. 'running', '-inf', now_ms - 60000)
return lost
"""
)

# The indexes a listing or a count reads (ARGV[8], ARGV[9]: "1" and an owner id, or "0" for
# every session): expiry and activity; what has expired leaves both first.  Costs
# O(log n) per session gone since the last purge of the pair, nothing for the others.
_INDEXES = """
local function indexes(one, owner)
  if one == '1' then return P .. 'so:' .. owner, P .. 'ao:' .. owner end
  return P .. 'sessions', P .. 'active'
end

local function purge(exp, act)
  while true do
    local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', '(' .. now_ms, 'LIMIT', 0, 500)
    if #gone == 0 then return end
    redis.call('ZREM', exp, unpack(gone))
    redis.call('ZREM', act, unpack(gone))
  end
end
"""

# ARGV[8..]: "1" and an owner id, or "0" and "" (every session).  How many sessions.
COUNT = (
    _PRELUDE
    + _INDEXES
    + """
local exp, act = indexes(ARGV[8], ARGV[9])
purge(exp, act)
return redis.call('ZCARD', act)
"""
)

# ARGV[8..]: "1" and an owner id, or "0" and ""; limit; the cursor's score and session id
# ("" and "" for the first page).  A page of the sessions latest activity first (equal
# scores: session id descending, Redis's own order): {flat, more} where flat holds, per
# session, its id, score, created_at, last_activity, count and title, and more is 1 when
# sessions follow the page.  The page starts at the cursor's place (found by rank, in
# O(log n), even if its session has moved or gone since); an entry whose session hash has
# gone is dropped from the indexes on the way.
LIST = (
    _PRELUDE
    + _INDEXES
    + """
local exp, act = indexes(ARGV[8], ARGV[9])
local limit, after_score, after_id = tonumber(ARGV[10]), ARGV[11], ARGV[12]
purge(exp, act)

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
local flat, n, more = {}, 0, 0
while more == 0 do
  local batch = redis.call('ZREVRANGE', act, rank, rank + limit - n, 'WITHSCORES')
  local kept = 0
  for j = 1, #batch, 2 do
    local id = batch[j]
    local skey = P .. 's:' .. id
    local f = redis.call('HMGET', skey, 'created_at', 'last_activity', 'count', 'title')
    if not f[1] then
      redis.call('ZREM', act, id)  -- gone (expired a moment ago, or deleted meanwhile)
      redis.call('ZREM', exp, id)
    elseif n == limit then
      more = 1
      break
    else
      local count = f[3] or tostring(redis.call('LLEN', P .. 'm:' .. id))
      for _, v in ipairs({id, batch[j + 1], f[1], f[2], count, f[4] or ''}) do flat[#flat + 1] = v end
      n, kept = n + 1, kept + 1
    end
  end
  if more == 1 or #batch < 2 * (limit - n + kept + 1) then break end
  rank = rank + kept
end
return {flat, more}
"""
)

# ARGV[8..]: session.  Forget its messages (count 0, no title); 1, or 0 without the session.
CLEAR = (
    _PRELUDE
    + """
local session = ARGV[8]
local skey = P .. 's:' .. session
if redis.call('EXISTS', skey) == 0 then return 0 end
redis.call('DEL', P .. 'm:' .. session)
redis.call('HSET', skey, 'count', 0, 'last_activity', now)
redis.call('HDEL', skey, 'title')
active(session)
if not redis.call('HGET', skey, 'generating') then touch(session) end
return 1
"""
)
