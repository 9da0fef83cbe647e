-- mod_geobridge_region: the region geobridge signed into a Jitsi token becomes the
-- participant's region.
--
-- geobridge puts the region it chose into the token's `context.region`. Once Jitsi's token
-- plugin has verified a token it fires `jitsi-authentication-token-verified` with the session
-- and the claims; this module then sets `session.user_region`, the field Jitsi's MUC modules
-- copy into the participant's presence as <jitsi_participant_region/>, which Jicofo reads to
-- pick a Videobridge in that region. Without a valid region claim the session keeps what it
-- had (for example the X-Proxy-Region header of a regional ingress).
--
-- Load it on the Jitsi VirtualHost that uses `authentication = "token"`. Loaded on the MUC
-- component as well, it also replaces a region the client wrote into its own presence, so
-- the signed region, not a value the client chose, drives the choice of bridge.

-- geobridge region ids: lower-case letters, digits and '-', at most 64 characters.
local REGION_PATTERN = "^[a-z0-9][a-z0-9%-]*$";
local REGION_MAX_LENGTH = 64;
local PRESENCE_REGION = "jitsi_participant_region";

-- Jitsi's own MUC hook that adds the session's region runs at priority 8; run before it.
local MUC_PRIORITY = 9;

-- The region claim of verified claims, or nil when it is missing or not a region id.
local function region_of(claims)
    if type(claims) ~= "table" or type(claims.context) ~= "table" then
        return nil;
    end
    local region = claims.context.region;
    if type(region) ~= "string" or #region > REGION_MAX_LENGTH then
        return nil;
    end
    if not region:match(REGION_PATTERN) then
        return nil;
    end
    return region;
end

local function on_token_verified(event)
    local session = event.session;
    if type(session) ~= "table" then
        return;
    end
    local region = region_of(event.claims);
    if region == nil then
        module:log("debug", "token of session %s has no usable context.region",
            tostring(session.id));
        return;
    end
    session.user_region = region;
    session.geobridge_region = region;
    module:log("debug", "session %s takes region %s from its token", tostring(session.id), region);
    -- Returning nothing lets the other handlers of the event run.
end

-- Puts the signed region into a presence in place of any region the client wrote.
local function stamp_presence(event)
    local origin, stanza = event.origin, event.stanza;
    local region = origin and origin.geobridge_region;
    if region == nil or stanza == nil then
        return;
    end
    stanza:maptags(function (child)
        if child.name == PRESENCE_REGION then
            return nil;
        end
        return child;
    end);
    stanza:tag(PRESENCE_REGION):text(region):up();
end

if module:get_host_type() == "component" then
    module:hook("muc-occupant-pre-join", stamp_presence, MUC_PRIORITY);
    module:hook("muc-occupant-pre-change", stamp_presence, MUC_PRIORITY);
else
    module:hook_global("jitsi-authentication-token-verified", on_token_verified);
end
