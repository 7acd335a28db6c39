-- Argo CD health check for sandboxes.dev/SandboxProcess (Lua 5.1, as Argo CD's gopher-lua).
-- Shaped like Argo CD's own tekton.dev/TaskRun check: `obj` in, `hs` {status, message} out.
--
--   deleting, or spec not yet observed (observedGeneration < generation)  -> Progressing
--   Stalled=True                                                          -> Degraded
--   Failed, Lost                                                          -> Degraded
--   Succeeded                                                             -> Healthy
--   Stopped (spec.state: Stopped, asked for in Git)                       -> Suspended
--   spec.state: Stopped while still Running or Pending (stopping)         -> Progressing
--   Running with Ready=True                                               -> Healthy
--   Running while Reconciling or not Ready (restarting, stopping), Pending -> Progressing
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

local function ended(status)
  if status.exitCode ~= nil then
    return "exit code " .. tostring(status.exitCode)
  end
  if status.signal ~= nil then
    return "killed by signal " .. tostring(status.signal)
  end
  return status.exitReason or "ended"
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: stopping the process"
  return hs
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the process"
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
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message(condition(status, "Completed"), "Failed: " .. ended(status))
  return hs
end
if phase == "Lost" then
  hs.status = "Degraded"
  hs.message = message(condition(status, "Ready"),
    "Lost: the pod or daemon that ran the process is gone")
  return hs
end
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message(condition(status, "Completed"), "Succeeded: " .. ended(status))
  return hs
end
if phase == "Stopped" then
  hs.status = "Suspended"
  hs.message = message(condition(status, "Completed"), "Stopped as spec.state asks")
  return hs
end

-- The operator reports Ready=True for as long as the process runs, stop requested or not.
if obj.spec ~= nil and obj.spec.state == "Stopped" then
  hs.status = "Progressing"
  hs.message = "Stopping: spec.state is Stopped, the process is " .. phase
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

local ready = condition(status, "Ready")
if phase == "Running" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "Running")
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, phase)
return hs
