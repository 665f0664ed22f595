-- Prepended (after common.lua) to every script that changes one existing task: claim,
-- settle, delete, requeue. They all receive the task's keys in one order, the order of
-- TaskKeys.as_list() in store/keys.py, so a key has one name in every script.
local K_TASK, K_TIMER, K_INFLIGHT, K_STATS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_DONE, K_HISTORY, K_HELD, K_DEAD = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
