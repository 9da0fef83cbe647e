-- Test helper for tests/api/prosody.rs: drives mod_geobridge_region inside a real Prosody.
--
-- Loaded as the main module of a component, it waits for the server to start, fires the
-- event Jitsi's token plugin fires after a token verified (on Prosody's global event bus)
-- and the MUC join and presence-change events (on this host), prints what the module did
-- as `geobridge-check:` lines on stdout, and shuts Prosody down.

local st = require "util.stanza";

local function say(...)
    print("geobridge-check: " .. string.format(...));
    io.stdout:flush();
end

local function verified(session, claims)
    prosody.events.fire_event("jitsi-authentication-token-verified", {
        session = session;
        claims = claims;
    });
    return tostring(session.user_region);
end

local function presence_regions(stanza)
    local found = {};
    for child in stanza:childtags("jitsi_participant_region") do
        table.insert(found, child:get_text());
    end
    return table.concat(found, ",");
end

local function run_checks()
    local signed = { id = "s1" };
    say("signed %s", verified(signed, { room = "r", context = { region = "eu-west" } }));

    local from_header = { id = "s2", user_region = "us-east" };
    local bad = { context = { region = "EU West; drop" } };
    say("bad-claim %s", verified(from_header, bad));
    say("no-context %s", verified({ id = "s3", user_region = "ap-south" }, { room = "r" }));

    local join = st.presence({ to = "room@conference.test/nick" })
        :tag("jitsi_participant_region"):text("client-chosen"):up();
    module:fire_event("muc-occupant-pre-join", { origin = signed, stanza = join });
    say("join %s", presence_regions(join));

    local change = st.presence({ to = "room@conference.test/nick" });
    module:fire_event("muc-occupant-pre-change", { origin = signed, stanza = change });
    say("change %s", presence_regions(change));

    local unsigned = st.presence({ to = "room@conference.test/nick" })
        :tag("jitsi_participant_region"):text("client-chosen"):up();
    module:fire_event("muc-occupant-pre-join", { origin = from_header, stanza = unsigned });
    say("unsigned %s", presence_regions(unsigned));
    say("done");
end

module:hook_global("server-started", function ()
    local ok, err = pcall(run_checks);
    if not ok then
        say("error %s", tostring(err));
    end
    -- Shutting down inside server-started is too early for Prosody; wait one tick.
    module:add_timer(0, function ()
        prosody.shutdown("geobridge checks finished");
    end);
end);
