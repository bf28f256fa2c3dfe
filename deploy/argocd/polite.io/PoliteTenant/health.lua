-- Argo CD health of a polite.io PoliteTenant, read from the status the operator writes
-- (politetenant/operator/model/status.py): observedGeneration, phase, and the conditions Ready,
-- Reconciling and Stalled (kstatus's) beside the parts Placement, NamespaceReady, KeysReady,
-- DatabaseReady, TrackerReady and RetentionReady.
--
-- Plain Lua 5.1 and base functions only (ipairs): argocd-cm scripts run without the string, table
-- and os libraries unless resource.customizations.useOpenLibs is set, so none is used here.
--
--   Progressing  the tenant is being deleted (the message says what holds it), its generation is not
--                observed yet, or it is Reconciling (rolling out, or retrying by itself). Never
--                Degraded for these: Argo CD fails a sync on Degraded.
--   Degraded     Stalled, or a part failed for a reason only a person can fix.
--   Suspended    ready, under a legal hold: retention and deletion are suspended.
--   Healthy      Ready for the current generation.

-- The operator's reasons that need a person (reasons.py NEEDS_ACTION); every other reason of a part
-- that is not True is progress (Provisioning, TrackerStarting, DatabaseStarting) or a failure the
-- operator retries by itself (ApiError, KeysUnavailable, OperatorError, NamespaceTerminating).
local needsAPerson = {
  InvalidSpec = true,
  RegionNotServed = true,
  DatabaseEngineUnavailable = true,
  DatabaseEngineChangeRefused = true,
  VaultRefused = true,
  KeysMissing = true,
  LegalHold = true,
}
local parts = { "Placement", "NamespaceReady", "KeysReady", "DatabaseReady", "TrackerReady", "RetentionReady" }

local hs = {}
local meta = obj.metadata or {}
local spec = obj.spec or {}
local status = obj.status or {}

local function condition(kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- "Reason: message", the way kubectl describe shows a condition.
local function about(c)
  local reason = c.reason or "NoReason"
  if c.message == nil or c.message == "" then
    return reason
  end
  return reason .. ": " .. c.message
end

local function say(health, message)
  hs.status = health
  hs.message = message
  return hs
end

local observedNow = status.observedGeneration ~= nil and status.observedGeneration == meta.generation
local namespace = "the tenant's namespace"
if status.namespace ~= nil then
  namespace = "namespace " .. status.namespace
end

if meta.deletionTimestamp ~= nil then
  local ready = condition("Ready")
  if observedNow and status.phase == "Deleting" and ready ~= nil then
    return say("Progressing", "Deleting, " .. about(ready))
  end
  if spec.legalHold == true then
    return say("Progressing", "Deleting: waiting for the operator, which holds the deletion while spec.legalHold is true")
  end
  if spec.deletionPolicy == "Delete" then
    return say("Progressing", "Deleting: waiting for the operator to delete " .. namespace .. ", then destroy the keys (deletionPolicy Delete)")
  end
  return say("Progressing", "Deleting: waiting for the operator to release the tenant; deletionPolicy Retain keeps " .. namespace .. " with its data and keys")
end

if status.observedGeneration == nil then
  return say("Progressing", "Waiting for the operator to observe generation " .. (meta.generation or 1))
end
if not observedNow then
  return say("Progressing", "Generation " .. (meta.generation or 1) .. " is not observed yet (status describes generation " .. status.observedGeneration .. ")")
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  return say("Degraded", "Stalled, " .. about(stalled))
end
for _, kind in ipairs(parts) do
  local part = condition(kind)
  if part ~= nil and part.status == "False" and needsAPerson[part.reason] then
    return say("Degraded", kind .. " failed, " .. about(part))
  end
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  return say("Progressing", "Reconciling, " .. about(reconciling))
end

local ready = condition("Ready")
if ready == nil or ready.status ~= "True" then
  return say("Progressing", "Waiting for Ready" .. (ready and (", " .. about(ready)) or ""))
end
if spec.legalHold == true then
  local retention = condition("RetentionReady") or ready
  return say("Suspended", "Legal hold, " .. about(retention) .. "; deletion is blocked while it holds")
end
return say("Healthy", about(ready))
