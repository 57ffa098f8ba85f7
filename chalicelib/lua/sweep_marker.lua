-- The sweep marker of a due second, shared by create_message.lua and ask_sweep.lua.
-- For an item indexed in a second the last tick already covered: 'ask' (none asked yet: the
-- marker is set, and the caller sends the sweep), 'pending' (one is on its way and will claim
-- the item) or 'swept' (it has run: the caller claims the item itself).
local function ask_sweep(sweep_key, marker_ttl_ms)
  local marker = redis.call('GET', sweep_key)
  if marker then
    return marker
  end
  redis.call('SET', sweep_key, 'pending', 'PX', marker_ttl_ms)
  return 'ask'
end
