//! The server-side Lua scripts: one limit check per request, one heartbeat per interval.

use std::time::Duration;

/// The check. KEYS: normal rate, tight rate, in-flight set, instances. ARGV: normal
/// emission (µs), normal burst, tight (`1`/`0`), tight emission (µs), tight burst, in-flight
/// cap, member, lease (µs), heartbeat ttl (ms).
///
/// GCRA state is the theoretical arrival time (µs, Redis's clock). A request is allowed
/// when `tat + emission - emission × burst <= now`. Nothing is written unless every check
/// passes. Returns `{0, held}` (allowed, slots held now), `{1, wait_us}` / `{2, wait_us}`
/// (normal / tight rate), `{3, held}` (in-flight cap).
pub(super) const CHECK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function gcra(key, emission, burst)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + emission
  local allow_at = new_tat - emission * burst
  if now < allow_at then return nil, allow_at - now end
  return new_tat, 0
end
local normal, wait = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if not normal then return {1, math.ceil(wait)} end
local tight = nil
if ARGV[3] == '1' then
  tight, wait = gcra(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
  if not tight then return {2, math.ceil(wait)} end
end
local cap = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local held = redis.call('ZCARD', KEYS[3])
if held >= cap then
  -- Before refusing, drop the slots of replicas whose heartbeat has expired.
  local alive_since = math.floor(now / 1000) - tonumber(ARGV[9])
  for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    local instance = string.match(member, '^(.*):[0-9]+$')
    local beat = instance and redis.call('ZSCORE', KEYS[4], instance)
    if not beat or tonumber(beat) < alive_since then
      redis.call('ZREM', KEYS[3], member)
    end
  end
  held = redis.call('ZCARD', KEYS[3])
  if held >= cap then return {3, held} end
end
local function keep(key, tat)
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
keep(KEYS[1], normal)
if tight then keep(KEYS[2], tight) end
local lease = tonumber(ARGV[8])
redis.call('ZADD', KEYS[3], string.format('%.0f', now + lease), ARGV[7])
redis.call('PEXPIRE', KEYS[3], math.ceil(lease / 1000))
return {0, held + 1}
"#;

/// The heartbeat. KEYS: instances. ARGV: this instance, ttl (ms). Records this instance at
/// Redis's time, forgets instances older than the ttl, returns the live count.
pub(super) const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
"#;

/// What the check script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Allowed; the user now holds this many in-flight slots.
    Allowed,
    /// The normal rate refused it until `retry_after` from now.
    RateLimited {
        /// Whether it was the tight quota.
        tight: bool,
        /// Until when (from now) the user is refused.
        retry_after: Duration,
    },
    /// The in-flight cap refused it.
    InFlight,
}

impl Verdict {
    /// Reads the script's `{code, value}` answer.
    pub(super) fn parse(reply: &[i64]) -> Option<Verdict> {
        let (code, value) = (*reply.first()?, *reply.get(1)?);
        let wait = Duration::from_micros(value.max(1) as u64);
        match code {
            0 => Some(Verdict::Allowed),
            1 | 2 => Some(Verdict::RateLimited {
                tight: code == 2,
                retry_after: wait,
            }),
            3 => Some(Verdict::InFlight),
            _ => None,
        }
    }
}

/// One emission interval of a rate, in µs (at least 1).
pub(super) fn emission_us(per_second: u32) -> u64 {
    (1_000_000 / u64::from(per_second.max(1))).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        assert_eq!(Verdict::parse(&[0, 3]), Some(Verdict::Allowed));
        assert_eq!(
            Verdict::parse(&[2, 1500]),
            Some(Verdict::RateLimited {
                tight: true,
                retry_after: Duration::from_micros(1500)
            })
        );
        assert_eq!(Verdict::parse(&[3, 5]), Some(Verdict::InFlight));
        assert_eq!(Verdict::parse(&[9, 0]), None);
        assert_eq!(Verdict::parse(&[]), None);
        assert_eq!(emission_us(50), 20_000);
        assert_eq!(emission_us(5_000_000), 1);
    }
}
