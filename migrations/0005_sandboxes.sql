-- Sandboxes: one per project, the provider's state mirrored here; what was uploaded.

CREATE TABLE sandboxes (
    project_id         text PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    owner_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider           text NOT NULL,
    external_id        text,
    -- bumped when a broken sandbox is replaced; part of the provider-side name
    generation         integer NOT NULL DEFAULT 0,
    toolbox_url        text,
    state              text NOT NULL DEFAULT 'none',
    error              text,
    -- the provider's preview link, cached until it expires
    preview_url        text,
    preview_token      text,
    preview_expires_at timestamptz,
    -- the owner's tier's idle limit when the sandbox last started
    idle_minutes       integer NOT NULL DEFAULT 10,
    last_activity_at   timestamptz NOT NULL DEFAULT now(),
    -- when the provider's idle timer was last refreshed
    keepalive_at       timestamptz,
    -- when the idle job must look at this sandbox next (stop, archive or re-check); NULL: never
    due_at             timestamptz,
    -- start of the running period not yet in usage_ledger
    started_at         timestamptz,
    -- a start/stop in progress holds the row until then
    lease_until        timestamptz,
    -- the newest provider event applied (webhooks may arrive out of order)
    provider_updated_at timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- The idle job's one query: due sandboxes, earliest first.
CREATE INDEX sandboxes_due ON sandboxes (due_at) WHERE due_at IS NOT NULL;
CREATE UNIQUE INDEX sandboxes_external ON sandboxes (provider, external_id);
CREATE INDEX sandboxes_owner ON sandboxes (owner_id) WHERE started_at IS NOT NULL;

-- The hash of each file as last uploaded, so a restart uploads only what changed.
CREATE TABLE sandbox_files (
    project_id text NOT NULL REFERENCES sandboxes (project_id) ON DELETE CASCADE,
    path       text NOT NULL,
    sha256     text NOT NULL,
    PRIMARY KEY (project_id, path)
);

-- Compute time of a usage row (kind 'sandbox'), in seconds.
ALTER TABLE usage_ledger ADD COLUMN compute_seconds bigint NOT NULL DEFAULT 0;
