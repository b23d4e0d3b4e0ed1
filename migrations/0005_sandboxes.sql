-- Sandboxes: one per project, the provider's state mirrored here; what was uploaded.

CREATE TABLE sandboxes (
    project_id       text PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    owner_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider         text NOT NULL,
    external_id      text,
    state            text NOT NULL DEFAULT 'creating',
    preview_url      text,
    error            text,
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The idle job's one query: started sandboxes by last activity.
CREATE INDEX sandboxes_idle ON sandboxes (state, last_activity_at);
CREATE UNIQUE INDEX sandboxes_external ON sandboxes (provider, external_id);

-- The hash of each file as last uploaded, so a restart uploads only what changed.
CREATE TABLE sandbox_files (
    project_id text NOT NULL REFERENCES sandboxes (project_id) ON DELETE CASCADE,
    path       text NOT NULL,
    sha256     text NOT NULL,
    PRIMARY KEY (project_id, path)
);
