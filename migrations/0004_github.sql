-- GitHub: app installations linked to users, a repository per project, the per-file sync base,
-- webhook deliveries.

-- An installation of our GitHub App. A row appears when a user links it (POST
-- /v1/github/installations, owner_id set) or when GitHub tells us about it (the `installation`
-- webhook, owner_id NULL until a user claims it).
CREATE TABLE github_installations (
    installation_id bigint PRIMARY KEY,
    owner_id        text REFERENCES users (id) ON DELETE CASCADE,
    account_login   text NOT NULL,
    account_id      bigint,
    account_type    text NOT NULL DEFAULT 'User',
    suspended       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX github_installations_owner ON github_installations (owner_id);

CREATE TABLE github_links (
    project_id      text PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    owner_id        text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    installation_id bigint NOT NULL,
    repo_id         bigint,
    repo_owner      text NOT NULL,
    repo_name       text NOT NULL,
    branch          text NOT NULL DEFAULT 'main',
    -- the commit both sides agree on (our last push or the last push we applied) and its tree
    last_synced_sha  text,
    last_synced_tree text,
    -- the commit we made last, recorded before the ref moves (its push webhook is ours)
    last_pushed_sha text,
    -- github_synced_files is exactly the tree of last_synced_sha (no conflict, no half-done sync)
    snapshot_exact  boolean NOT NULL DEFAULT false,
    -- one sync at a time per project: a lease
    sync_lock_until timestamptz,
    last_sync_at    timestamptz,
    -- the code and detail of the last failed sync, NULL after a good one
    last_error      text,
    -- {branch, paths, at} of the last unresolved conflict
    conflict        jsonb,
    -- what the last good sync did (files pushed, pulled, skipped with why, conflicts)
    last_report     jsonb,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'suspended', 'uninstalled', 'no_access', 'deleted')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX github_links_repo ON github_links (repo_id);
CREATE INDEX github_links_name ON github_links (lower(repo_owner), lower(repo_name));
CREATE INDEX github_links_installation ON github_links (installation_id);

-- The sync base per file: the blob both sides last agreed on. sha256 is the project store's hash
-- of that content, NULL for a repository file the project does not hold (skipped: bad path, too
-- large, not a regular file).
CREATE TABLE github_synced_files (
    project_id text NOT NULL REFERENCES github_links (project_id) ON DELETE CASCADE,
    path       text NOT NULL,
    git_sha    text NOT NULL,
    sha256     text,
    mode       text NOT NULL DEFAULT '100644',
    PRIMARY KEY (project_id, path)
);

-- Every webhook delivery we accepted, once (GitHub X-GitHub-Delivery, Svix svix-id).
CREATE TABLE webhook_deliveries (
    source       text NOT NULL CHECK (source IN ('github', 'daytona')),
    delivery_id  text NOT NULL,
    event        text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    result       text,
    PRIMARY KEY (source, delivery_id)
);
