-- Tiers and quotas (per-user overrides), bring-your-own provider keys.

-- Limits an admin set for this user, over the tier's defaults (keys as in the tier table).
ALTER TABLE users ADD COLUMN limits_override jsonb NOT NULL DEFAULT '{}'::jsonb;

CREATE TABLE provider_keys (
    owner_id   text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   text NOT NULL CHECK (provider IN ('anthropic', 'openai')),
    -- which KEYS_ENCRYPTION_KEY sealed it, so keys can be rotated and rows re-encrypted
    key_id     text NOT NULL,
    nonce      bytea NOT NULL,
    ciphertext bytea NOT NULL,
    last4      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, provider)
);

CREATE INDEX usage_ledger_owner_kind ON usage_ledger (owner_id, kind, created_at);
