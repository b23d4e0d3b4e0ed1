-- The running-sandboxes quota: a start counts the owner's sandboxes that are running or on their
-- way up (billing::tiers `sandboxes_running`; the limits themselves live in the tier table and
-- users.limits_override, like every other limit).
CREATE INDEX sandboxes_owner_active ON sandboxes (owner_id)
    WHERE state IN ('creating', 'starting', 'restoring', 'started');
