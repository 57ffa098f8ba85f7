-- A command that takes any number of arguments after its key, sent with a whole list of them
-- in as few calls as Lua allows (unpack() is bounded by Lua's stack): nothing for an empty list.
-- Returns what the calls answered, as one list, for a command that answers one per argument.
local function variadic(command, key, args)
  local answers = {}
  for from = 1, #args, 1000 do
    local answer = redis.call(command, key, unpack(args, from, math.min(from + 999, #args)))
    if type(answer) == 'table' then
      for n = 1, #answer do answers[#answers + 1] = answer[n] end
    end
  end
  return answers
end
