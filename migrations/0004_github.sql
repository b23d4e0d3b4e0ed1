-- GitHub: app installations linked to users, a repository per project, webhook deliveries.

CREATE TABLE github_installations (
    installation_id bigint PRIMARY KEY,
    owner_id        text REFERENCES users (id) ON DELETE CASCADE,
    account_login   text NOT NULL,
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
    -- the commit both sides agree on (our last push or the last push we applied)
    last_synced_sha text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted', 'suspended')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX github_links_repo ON github_links (repo_id);
CREATE INDEX github_links_name ON github_links (lower(repo_owner), lower(repo_name));

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
