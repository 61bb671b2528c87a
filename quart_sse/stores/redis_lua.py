"""The Redis store's Lua scripts: every write that must be atomic across instances.

Keys (``P`` is the prefix, ``qs:``): ``P s:{session}`` hash (model, created_at,
last_activity, generating, owner), ``P m:{session}`` list of messages (JSON), ``P sessions``
sorted set (score: the session's expiry in ms, ``+inf`` when it has none) and
``P so:{owner}`` the same for one owner's sessions, ``P st:{stream}`` hash (session, owner
(the generating instance), uid (the session's owner id), last id, finished, saved, closed),
``P log:{stream}`` the Redis Stream of frames (entry ``0-k`` is event ``k``; field ``f`` the
frame, ``e`` on the final one), ``P lease:{stream}`` the owner's lease (its instance id,
with a PX expiry), ``P ans:{stream}`` the answer text so far (for a close by another
instance), ``P running`` and ``P instances`` sorted sets scored by lease expiry (for the
cluster-wide figures).

Frames are opaque: a script never reads one.  A stream closed because its owner is gone
gets an entry ``c`` (the code, ``interrupted``) instead of a frame; its readers write the
final event themselves.

Key names are built inside the scripts from the prefix, so the scripts suit one Redis
server (or a replicated one), not Redis Cluster.

Every script starts with the same six arguments (:data:`HEAD`), then its own.
"""

from __future__ import annotations

HEAD = ("prefix", "instance", "now_iso", "now_ms", "session_ttl_ms", "retention_ms")

_PRELUDE = """
local P, me, now, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ttl_ms, ret_ms = tonumber(ARGV[5]), tonumber(ARGV[6])

-- A session's place in the indexes (all sessions, and its owner's), scored by its expiry.
local function index(session, score)
  redis.call('ZADD', P .. 'sessions', score, session)
  local owner = redis.call('HGET', P .. 's:' .. session, 'owner')
  if owner then redis.call('ZADD', P .. 'so:' .. owner, score, session) end
end

-- The session's expiry moves on (SESSION_TTL) when it is touched and no generation runs.
local function touch(session)
  if ttl_ms > 0 then
    redis.call('PEXPIRE', P .. 's:' .. session, ttl_ms)
    redis.call('PEXPIRE', P .. 'm:' .. session, ttl_ms)
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
      redis.call('HSET', skey, 'last_activity', now)
    end
  end
  if exists and redis.call('HGET', skey, 'generating') == sid then
    redis.call('HDEL', skey, 'generating')
    touch(session)
  end
  local k = tonumber(m[2])
  redis.call('XADD', P .. 'log:' .. sid, '0-' .. (k + 1), 'c', 'interrupted')
  redis.call('HSET', meta, 'closed', 'interrupted')
  finish(sid, k)
  return 2
end

local function alive(sid)
  return redis.call('EXISTS', P .. 'lease:' .. sid) == 1
end
"""

# ARGV[7..]: session, stream, lease ms, the user's message (JSON).
# Nil when the slot is taken; the running stream's id when it is held by a live owner;
# -1 when the session does not exist.  A holder whose lease lapsed is closed first.
BEGIN = (
    _PRELUDE
    + """
local session, sid, lease_ms, first = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10]
local skey, mkey = P .. 's:' .. session, P .. 'm:' .. session
if redis.call('EXISTS', skey) == 0 then return -1 end
local running = redis.call('HGET', skey, 'generating')
if running then
  if alive(running) then return running end
  reap(running)
end
redis.call('HSET', skey, 'generating', sid, 'last_activity', now)
redis.call('RPUSH', mkey, first)
redis.call('PERSIST', skey)
redis.call('PERSIST', mkey)
if ttl_ms > 0 then index(session, '+inf') end
redis.call('HSET', P .. 'st:' .. sid, 'session', session, 'last', 0, 'owner', me)
local uid = redis.call('HGET', skey, 'owner')
if uid then redis.call('HSET', P .. 'st:' .. sid, 'uid', uid) end
redis.call('SET', P .. 'lease:' .. sid, me, 'PX', lease_ms)
redis.call('ZADD', P .. 'running', now_ms + lease_ms, sid)
return false
"""
)

# ARGV[7..]: per stream: stream id, "1" if its last frame is the final one, n, the id of
# its first frame, the answer text the frames add, n frames.  Frames go in only while this
# instance holds the stream's lease and the first frame follows the log's last one;
# otherwise the stream is lost (closed as interrupted if its owner is gone or is us).
# Returns the ids of the lost streams.
APPEND = (
    _PRELUDE
    + """
local lost = {}
local i = 7
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

# ARGV[7..]: session, stream, the answer (JSON, or "" for none).
# The new history length; -1 when the lease is not ours any more; -2 without a session.
SAVE = (
    _PRELUDE
    + """
local session, sid, answer = ARGV[7], ARGV[8], ARGV[9]
local meta = P .. 'st:' .. sid
if redis.call('GET', P .. 'lease:' .. sid) ~= me or redis.call('HGET', meta, 'finished') == '1' then
  return -1
end
redis.call('HSET', meta, 'saved', '1')
local skey, mkey = P .. 's:' .. session, P .. 'm:' .. session
if redis.call('EXISTS', skey) == 0 then return -2 end
if answer ~= '' then
  redis.call('RPUSH', mkey, answer)
  redis.call('HSET', skey, 'last_activity', now)
end
if redis.call('HGET', skey, 'generating') == sid then redis.call('HDEL', skey, 'generating') end
touch(session)
return redis.call('LLEN', mkey)
"""
)

# ARGV[7..]: session.  {hash fields, messages} or nil; a holder whose lease lapsed is
# closed first, so that a dead instance never keeps the session locked.
LOAD = (
    _PRELUDE
    + """
local session = ARGV[7]
local skey = P .. 's:' .. session
local running = redis.call('HGET', skey, 'generating')
if running and not alive(running) then reap(running) end
local fields = redis.call('HGETALL', skey)
if #fields == 0 then return false end
return {fields, redis.call('LRANGE', P .. 'm:' .. session, 0, -1)}
"""
)

# ARGV[7..]: stream.  What a reader finds when the stream is quiet: 0 unknown stream,
# 1 ended or still owned, 2 closed now because its owner's lease lapsed.
CHECK = (
    _PRELUDE
    + """
local sid = ARGV[7]
if alive(sid) then return 1 end
return reap(sid)
"""
)

# ARGV[7..]: lease ms, streams.  Renews this instance's leases; returns the streams whose
# lease is not ours any more.
RENEW = (
    _PRELUDE
    + """
local lease_ms = tonumber(ARGV[7])
local lost = {}
for i = 8, #ARGV do
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
