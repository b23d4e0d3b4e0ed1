-- GitHub catch-up: a sync the server owes a project (a webhook's pull, an agent run's push) is
-- marked on the link before it runs and cleared when a sync covering it succeeds; the scheduled
-- job re-runs what stays marked, with backoff.

ALTER TABLE github_links
    -- what is owed: 'pull' (the branch into the project) or 'push' (both ways, committing ours)
    ADD COLUMN catchup          text CHECK (catchup IN ('pull', 'push')),
    -- the commit message of an owed push
    ADD COLUMN catchup_message  text,
    -- who asked (the audit's `by`: github:<pusher>, agent)
    ADD COLUMN catchup_by       text,
    -- when it was marked: a sync that started after this covers it
    ADD COLUMN catchup_since    timestamptz,
    -- not retried before this
    ADD COLUMN catchup_after    timestamptz,
    -- failed retries by the job; it stops at its limit
    ADD COLUMN catchup_attempts integer NOT NULL DEFAULT 0;
CREATE INDEX github_links_catchup ON github_links (catchup_after) WHERE catchup IS NOT NULL;
