-- The background work of one process, in one round trip, on the server's clock (microseconds).
-- ARGV: [1] lease, [2] the longest token debt; then, for each KEYS[i], an operation and its
-- value at ARGV[1 + 2i] and ARGV[2 + 2i]:
--   'spend'   KEYS[i] a tpm TAT, value the debt of the tokens spent (tat = max(tat, now) + debt)
--   'release' KEYS[i] a lease set, value the member to remove
--   'renew'   KEYS[i] a lease set, value a member still held (put back if Redis lost it:
--             restarted empty, or an outage outlasted the lease; the holder is alive)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local lease, max_debt = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local op, value = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  if op == 'spend' then
    local owed = math.max((tonumber(redis.call('GET', key)) or 0) - now, 0)
    owed = math.min(owed + tonumber(value), max_debt)
    if owed > 0 then
      redis.call('SET', key, string.format('%.0f', now + owed), 'PX', math.ceil(owed / 1000))
    end
  elseif op == 'release' then
    redis.call('ZREM', key, value)
  elseif op == 'renew' then
    redis.call('ZADD', key, string.format('%.0f', now + lease), value)
    -- The set outlives each of its leases (never shortened: another router's lease may be
    -- longer).
    if redis.call('PTTL', key) < math.ceil(lease / 1000) then
      redis.call('PEXPIRE', key, math.ceil(lease / 1000))
    end
  end
end
return #KEYS
