-- Foundation: accounts, refresh tokens, projects, content-addressed files, audit log.
-- Ids are prefixed, time-ordered text ids made by the application (see shared/src/ids.rs).

CREATE TABLE users (
    id               text PRIMARY KEY,
    email            text,
    -- lower-cased email, unique among accounts that have one (OIDC users may have none)
    email_normalized text UNIQUE,
    role             text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    tier             text NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'starter', 'pro', 'enterprise')),
    -- "<issuer>|<sub>" for users who arrive through external OIDC
    oidc_subject     text UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE credentials (
    user_id       text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    -- "pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>"
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE refresh_tokens (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- all tokens rotated from one login share a family; reuse revokes the family
    family_id  text NOT NULL,
    token_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE projects (
    id          text PRIMARY KEY,
    owner_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    template    text NOT NULL DEFAULT 'blank',
    total_bytes bigint NOT NULL DEFAULT 0 CHECK (total_bytes >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_owner ON projects (owner_id, id);

-- File contents, stored once per owner and content hash (no cross-tenant sharing,
-- so erasure of one user never touches another's data).
CREATE TABLE blobs (
    owner_id   text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    content    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, sha256)
);

CREATE TABLE files (
    project_id text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    path       text NOT NULL,
    owner_id   text NOT NULL,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, path),
    FOREIGN KEY (owner_id, sha256) REFERENCES blobs (owner_id, sha256) ON DELETE CASCADE
);
CREATE INDEX files_blob ON files (owner_id, sha256);

CREATE TABLE audit_events (
    id         text PRIMARY KEY,
    user_id    text REFERENCES users (id) ON DELETE CASCADE,
    action     text NOT NULL,
    target     text,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
    ip         text,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
