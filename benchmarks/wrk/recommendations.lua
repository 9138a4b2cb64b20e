-- GET /users/{id}/recommendations?k=10 for a random known user (ids 1..N_USERS).
local n_users = tonumber(os.getenv("N_USERS") or "6040")
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/users/" .. math.random(1, n_users) .. "/recommendations?k=10")
end
dofile(os.getenv("WRK_DIR") .. "/report.lua")
