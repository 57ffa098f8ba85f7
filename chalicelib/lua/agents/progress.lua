-- Record an agent's progress report on its running run.
-- KEYS[1] run hash
-- ARGV[1] agent id   ARGV[2] callback token   ARGV[3] progress json
-- Returns 1; 0 unknown run; -1 finished run; -2 not running; -3 wrong token.
--#include report_checks
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
return 1
