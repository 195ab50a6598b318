-- One request's check for one key, atomically, on the server's clock (microseconds).
-- KEYS: [1] rpm TAT, [2] tpm TAT, [3] leases (sorted set, score = expiry).
-- ARGV: [1] rpm (0: none), [2] its period, [3] tpm (0: none), [4] the time one token takes
-- to come back, [5] max_concurrent (0: none), [6] lease, [7] the lease's member.
-- Order: tokens (a read), concurrency, rate; a refusal changes no state (expired leases are
-- swept, which changes no answer).
-- Returns {1, requests left, requests reset, tokens left, tokens reset} (-1: no such limit)
-- or {0, which (1 tokens, 2 concurrency, 3 requests), wait}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = 60000000
local rpm, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local tpm, per_token = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_concurrent, lease = tonumber(ARGV[5]), tonumber(ARGV[6])

local tokens_left, tokens_reset = -1, 0
if tpm > 0 then
  local owed = math.max((tonumber(redis.call('GET', KEYS[2])) or 0) - now, 0)
  -- Refused while not one token of the minute is free (so a refusal goes with remaining 0).
  if owed + per_token > window then
    return {0, 1, owed + per_token - window}
  end
  tokens_left = math.min(math.floor((window - owed) / per_token), tpm)
  tokens_reset = owed
end

if max_concurrent > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= max_concurrent then
    return {0, 2, 0}
  end
end

local requests_left, requests_reset, tat = -1, 0, 0
if rpm > 0 then
  -- GCRA: a burst of rpm, then one per period.
  local burst = rpm * period
  tat = math.max(tonumber(redis.call('GET', KEYS[1])) or 0, now) + period
  local ahead = tat - now
  if ahead > burst then
    return {0, 3, ahead - burst}
  end
  requests_left = math.floor((burst - ahead) / period)
  requests_reset = ahead
end

if rpm > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil(requests_reset / 1000))
end
if max_concurrent > 0 then
  redis.call('ZADD', KEYS[3], string.format('%.0f', now + lease), ARGV[7])
  -- Never shortens the set's life: a router with a shorter lease must not expire the others'.
  if redis.call('PTTL', KEYS[3]) < math.ceil(lease / 1000) then
    redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000))
  end
end
return {1, requests_left, requests_reset, tokens_left, tokens_reset}
