-- Argo CD health check for sandboxes.dev/PtySession (Lua 5.1, as Argo CD's gopher-lua).
-- Shaped like Argo CD's own tekton.dev/TaskRun check: `obj` in, `hs` {status, message} out.
--
--   deleting, or spec not yet observed (observedGeneration < generation) -> Progressing
--   Stalled=True, Lost                                                   -> Degraded
--   Active but TokenStored=False for good (TokenUnrecoverable,
--   SecretsNotServed: nobody can attach)                                 -> Degraded
--   Active with Ready=True                                               -> Healthy
--   Exited, Expired (the session ended the way sessions end)             -> Healthy
--   Pending, Active while Reconciling or not yet Ready                   -> Progressing
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message(c, default)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return default
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: closing the terminal session"
  return hs
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to open the session"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
  return hs
end

local phase = status.phase
if phase == "Lost" then
  hs.status = "Degraded"
  hs.message = message(condition(status, "Ready"),
    "Lost: the pod or daemon that held the session is gone")
  return hs
end
if phase == "Exited" then
  local code = ""
  if status.exitCode ~= nil then
    code = " with code " .. tostring(status.exitCode)
  end
  hs.status = "Healthy"
  hs.message = message(condition(status, "Completed"), "Exited" .. code)
  return hs
end
if phase == "Expired" then
  hs.status = "Healthy"
  hs.message = message(condition(status, "Completed"), "Expired (idle timeout or TTL)")
  return hs
end

local token = condition(status, "TokenStored")
if phase == "Active" and token ~= nil and token.status == "False"
    and (token.reason == "TokenUnrecoverable" or token.reason == "SecretsNotServed") then
  hs.status = "Degraded"
  hs.message = message(token, "The attach token could not be stored")
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

local ready = condition(status, "Ready")
if phase == "Active" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "Active")
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, phase)
return hs
