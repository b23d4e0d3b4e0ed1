-- A model call whose stream was cut short (a cancel, a stall, a broken connection, the time limit)
-- or whose provider sent no usage is billed an estimate of what it used (chat::agent): providers
-- report output tokens only at a stream's end, and OpenAI-compatible ones all usage. The ledger
-- says which rows are estimates.
ALTER TABLE usage_ledger ADD COLUMN estimated boolean NOT NULL DEFAULT false;
