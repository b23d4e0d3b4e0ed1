-- Chat: sessions, messages, runs with their event log, and the usage ledger.

CREATE TABLE sessions (
    id         text PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    owner_id   text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text NOT NULL DEFAULT '',
    -- last sequence number handed out in this session (events of every run share one sequence)
    last_seq   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_project ON sessions (project_id, id);
CREATE INDEX sessions_owner ON sessions (owner_id);

CREATE TABLE runs (
    id               text PRIMARY KEY,
    session_id       text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    owner_id         text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'complete', 'incomplete', 'error', 'cancelled')),
    provider         text NOT NULL,
    model            text NOT NULL,
    -- the sequence number of the session before this run's first event
    first_seq        bigint NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    error            text,
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
-- One active run per session: a second concurrent send is refused (409).
CREATE UNIQUE INDEX runs_one_active ON runs (session_id) WHERE status = 'running';
CREATE INDEX runs_owner ON runs (owner_id);

CREATE TABLE messages (
    id                 text PRIMARY KEY,
    session_id         text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    owner_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    run_id             text REFERENCES runs (id) ON DELETE SET NULL,
    role               text NOT NULL CHECK (role IN ('user', 'assistant')),
    -- content blocks: [{type: text, text} | {type: tool_use, id, name, input} | {type: tool_result, tool_use_id, content, is_error}]
    content            jsonb NOT NULL,
    status             text NOT NULL DEFAULT 'complete'
                       CHECK (status IN ('complete', 'incomplete', 'error', 'cancelled')),
    model              text,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost_micros        bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_session ON messages (session_id, id);
CREATE INDEX messages_owner ON messages (owner_id);

-- The durable event log of runs (Spin serves replay from it; Workers keep the
-- live buffer in the session's Durable Object and may mirror here).
CREATE TABLE run_events (
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    run_id     text NOT NULL,
    event      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE usage_ledger (
    id                 text PRIMARY KEY,
    owner_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id         text,
    run_id             text,
    kind               text NOT NULL DEFAULT 'model' CHECK (kind IN ('model', 'sandbox', 'api')),
    provider           text NOT NULL,
    model              text NOT NULL,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    -- integer micro-units of USD, never floats
    cost_micros        bigint NOT NULL DEFAULT 0,
    -- paid by the user's own provider key
    byok               boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_owner ON usage_ledger (owner_id, created_at);
