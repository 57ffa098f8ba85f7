-- Ask for the sweep of one due second, for an item indexed in it after the last tick covered it.
-- KEYS[1] the second's sweep marker   ARGV[1] how long a new marker lives (ms)
-- Returns 'ask' (none asked yet: the caller sends the sweep), 'pending' (one is on its way and
-- will claim the item) or 'swept' (it has run: the caller claims the item itself).
local marker = redis.call('GET', KEYS[1])
if marker then
  return marker
end
redis.call('SET', KEYS[1], 'pending', 'PX', ARGV[1])
return 'ask'
