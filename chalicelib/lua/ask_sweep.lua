-- Ask for the sweep of one due second, for an item indexed in it after the last tick covered it.
-- KEYS[1] the second's sweep marker
-- ARGV[1] how long a new marker lives (ms)
-- Returns 'ask', 'pending' or 'swept' (see sweep_marker.lua).
--#include sweep_marker
local sweep_key = KEYS[1]
local marker_ttl_ms = ARGV[1]

return ask_sweep(sweep_key, marker_ttl_ms)
